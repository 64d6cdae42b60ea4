"""CLIP backbone for clip and query features, loaded from a Hugging Face CLIP directory.

`load_clip(path)` reads what `CLIPModel.save_pretrained` writes (config.json plus
model.safetensors or pytorch_model.bin; preprocessor_config.json when present) and,
for query features only, the tokenizer files (`CLIPTokenizer.save_pretrained`'s, or
OpenAI's `bpe_simple_vocab_16e6.txt.gz`): video features need no tokenizer. Sizes come
from config.json, so any CLIP variant loads; the mapping is strict.
The weights are never downloaded: CLIP ViT-B/32 as the public Moment-DETR / QVHighlights
features used it is published on the Hugging Face hub as `openai/clip-vit-base-patch32`.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from momentdiff_jax.features import weights as weights_lib
from momentdiff_jax.features.clip_model import ACTIVATIONS, ImageTower, TextTower, TowerConfig
from momentdiff_jax.features.clip_tokenizer import ClipTokenizer

# OpenAI CLIP's image normalization (clip/clip.py `_transform`), also the defaults of
# Hugging Face's CLIPImageProcessor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WHERE = ('CLIP weights are published on the Hugging Face hub, e.g. '
         'openai/clip-vit-base-patch32 (the model behind the public Moment-DETR / '
         'QVHighlights CLIP features); save them with CLIPModel.save_pretrained or download '
         'the repository files.')
# Single files, then the index files `save_pretrained` writes for sharded weights.
WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin', 'model.safetensors.index.json',
                'pytorch_model.bin.index.json')
# Hugging Face CLIPTextConfig / CLIPVisionConfig defaults (= ViT-B/32), used only for
# keys a config.json leaves out; the tensor shapes are checked against them anyway.
_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                      num_hidden_layers=12, num_attention_heads=8,
                      max_position_embeddings=77, hidden_act='quick_gelu', layer_norm_eps=1e-5)
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, image_size=224, patch_size=32,
                        num_channels=3, hidden_act='quick_gelu', layer_norm_eps=1e-5)
# Tensors of a CLIPModel that the two feature outputs never use.
_UNUSED = ('text_projection.weight', 'logit_scale', 'text_model.embeddings.position_ids',
           'vision_model.embeddings.position_ids')


def _tower_config(raw: dict, defaults: dict, source: str, extra) -> TowerConfig:
  c = {**defaults, **{k: v for k, v in raw.items() if k in defaults}}
  if c['hidden_act'] not in ACTIVATIONS:
    raise weights_lib.WeightsError(f'{source}: hidden_act {c["hidden_act"]!r} not supported '
                                   f'({", ".join(ACTIVATIONS)})')
  if c['hidden_size'] % c['num_attention_heads']:
    raise weights_lib.WeightsError(f'{source}: hidden_size {c["hidden_size"]} is not a '
                                   f'multiple of num_attention_heads {c["num_attention_heads"]}')
  return TowerConfig(width=c['hidden_size'], layers=c['num_hidden_layers'],
                     heads=c['num_attention_heads'], mlp_dim=c['intermediate_size'],
                     act=c['hidden_act'], eps=float(c['layer_norm_eps']), **extra(c))


def _assign(name: str):
  """HF CLIPModel tensor name -> ('text'|'image' param path, transform) or None."""
  parts = name.split('.')
  tower = {'text_model': 'text', 'vision_model': 'image'}.get(parts[0])
  if name == 'visual_projection.weight':
    return 'image/visual_projection/kernel', np.transpose
  if tower is None:
    return None
  rest = parts[1:]
  if rest[0] == 'embeddings':
    if rest[1:] == ['token_embedding', 'weight']:
      return f'{tower}/token_embedding/embedding', np.asarray
    if rest[1:] == ['position_embedding', 'weight']:
      return f'{tower}/position_embedding', np.asarray
    if rest[1:] == ['class_embedding']:
      return f'{tower}/class_embedding', np.asarray
    if rest[1:] == ['patch_embedding', 'weight']:  # (O, I, kh, kw) -> (kh, kw, I, O)
      return f'{tower}/patch_embedding/kernel', lambda w: np.transpose(w, (2, 3, 1, 0))
    return None
  leaf = {'weight': 'scale', 'bias': 'bias'}
  if rest[0] in ('final_layer_norm', 'pre_layrnorm', 'post_layernorm') and len(rest) == 2:
    return f'{tower}/{rest[0]}/{leaf[rest[1]]}', np.asarray
  if rest[:2] == ['encoder', 'layers'] and len(rest) >= 5:
    layer = f'{tower}/encoder/layers_{rest[2]}'
    mod, kind = rest[3:-1], rest[-1]
    if mod in (['layer_norm1'], ['layer_norm2']):
      return f'{layer}/{mod[0]}/{leaf[kind]}', np.asarray
    if mod in (['mlp', 'fc1'], ['mlp', 'fc2']) or (mod[0] == 'self_attn' and len(mod) == 2):
      path = f'{layer}/{"/".join(m for m in mod if m != "mlp")}'
      return ((f'{path}/kernel', np.transpose) if kind == 'weight'
              else (f'{path}/bias', np.asarray))
  return None


class ClipBackbone:
  """CLIP image and text towers with their parameters, jit-compiled.

  Attributes: image_size, image_mean, image_std (preprocessing the weights expect),
  embed_dim (projection dim), text_width, context_length.
  """

  def __init__(self, image_tower: ImageTower, text_tower: TextTower, params: dict,
               tokenizer, image_mean=CLIP_MEAN, image_std=CLIP_STD):
    """`tokenizer`: a ClipTokenizer, or the directory to read one from at first use."""
    self.image_tower, self.text_tower = image_tower, text_tower
    self.params = params  # {'image': ..., 'text': ...}
    self._tokenizer = tokenizer
    self.image_size = image_tower.cfg.image_size
    self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
    self.embed_dim = image_tower.projection_dim
    self.text_width = text_tower.cfg.width
    self.context_length = text_tower.cfg.context_length
    self._images = jax.jit(self.apply_images)
    self._text = jax.jit(self.apply_text)

  # Pure functions of (params, arrays), for callers that shard inputs themselves.
  def apply_images(self, params, pixels):
    return self.image_tower.apply({'params': params['image']}, pixels)

  def apply_text(self, params, ids, mask):
    return self.text_tower.apply({'params': params['text']}, ids, mask)

  @property
  def tokenizer(self) -> ClipTokenizer:
    """The BPE tokenizer, read from the CLIP directory at first use (query features
    only; FileNotFoundError naming the files when the directory has none)."""
    if isinstance(self._tokenizer, str):
      self._tokenizer = ClipTokenizer.from_dir(self._tokenizer, self.context_length)
    return self._tokenizer

  def tokenize(self, texts):
    """list[str] -> ids, mask int32 (B, context_length) numpy."""
    return self.tokenizer(texts)

  def encode_images(self, pixels) -> jax.Array:
    """pixels float32 (N, S, S, 3), resized/cropped/normalized -> (N, embed_dim).

    The projected class token, NOT L2-normalized: what OpenAI's `model.encode_image`
    returns and what the public Moment-DETR/HERO CLIP feature files hold (consumers
    normalize per feature type).
    """
    shape = tuple(pixels.shape)
    want = (self.image_size, self.image_size, self.image_tower.cfg.channels)
    if len(shape) != 4 or shape[1:] != want:
      raise ValueError(f'encode_images: pixels shape {shape}, expected (N, {want[0]}, '
                       f'{want[1]}, {want[2]})')
    return self._images(self.params, jnp.asarray(pixels, jnp.float32))

  def encode_text(self, ids, mask) -> jax.Array:
    """ids, mask int (B, L<=context_length) -> last_hidden_state (B, L, text_width).

    Every token's state after the final LayerNorm (Hugging Face `last_hidden_state`;
    the per-token query features of the public Moment-DETR releases). Rows past the
    end token are padding: keep `mask == 1` rows. Attention is causal, so cutting ids
    and mask to the batch's longest query (`L = mask.sum(1).max()`) leaves those rows
    unchanged and saves the work on padding (77 / L times less).
    """
    ids, mask = np.asarray(ids), np.asarray(mask)
    if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[1] > self.context_length:
      raise ValueError(f'encode_text: ids {ids.shape} / mask {mask.shape}, expected equal '
                       f'(B, L) with L <= {self.context_length}')
    return self._text(self.params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))


def _read_json(path):
  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise weights_lib.WeightsError(f'{path}: not valid JSON ({e})') from e


def _preprocessing(path: str, default_size: int):
  """(image_size, mean, std) from preprocessor_config.json, else CLIP's defaults."""
  file = os.path.join(path, 'preprocessor_config.json')
  if not os.path.isfile(file):
    return default_size, CLIP_MEAN, CLIP_STD
  cfg = _read_json(file)
  crop = cfg.get('crop_size', default_size)
  if isinstance(crop, dict):
    crop = crop.get('height', default_size)
  return (int(crop), tuple(cfg.get('image_mean', CLIP_MEAN)),
          tuple(cfg.get('image_std', CLIP_STD)))


def _read_weights(file: str) -> dict:
  """name -> array from one weights file, or from every shard an index file lists."""
  if not file.endswith('.index.json'):
    return weights_lib.read_tensors(file)
  weight_map = _read_json(file).get('weight_map')
  if not isinstance(weight_map, dict) or not weight_map:
    raise weights_lib.WeightsError(f'{file}: no "weight_map" of tensor -> shard file')
  tensors = {}
  for shard in sorted(set(weight_map.values())):
    shard_file = os.path.join(os.path.dirname(file), shard)
    weights_lib.require_file(shard_file, f'CLIP weights shard listed in {file}', WHERE)
    tensors.update(weights_lib.read_tensors(shard_file))
  return tensors


def load_clip(path: str, with_tokenizer: bool = True) -> ClipBackbone:
  """Loads a Hugging Face CLIP directory (config.json + weights [+ tokenizer files]).

  `with_tokenizer=False` (video features only): the tokenizer files are not asked
  for now, only read if `tokenize` is called later.
  """
  if os.path.isfile(path):
    raise weights_lib.WeightsError(
        f'CLIP weights: {path} is a file; load_clip takes a Hugging Face CLIP directory '
        '(config.json + model.safetensors or pytorch_model.bin + tokenizer files). '
        "OpenAI's ViT-B-32.pt is a TorchScript archive (code) and is not read. " + WHERE)
  if not os.path.isdir(path):
    raise weights_lib.WeightsError(f'CLIP weights: directory not found: {path}. {WHERE}')
  config_file = os.path.join(path, 'config.json')
  weights_lib.require_file(config_file, 'CLIP config', WHERE)
  config = _read_json(config_file)
  # Older hub configs also carry `*_config_dict` (same content); the newer key wins.
  towers = {k: {**(config.get(f'{k}_config_dict') or {}), **(config.get(f'{k}_config') or {})}
            for k in ('text', 'vision')}
  if config.get('model_type', 'clip') != 'clip' or not all(
      f'{k}_config' in config or f'{k}_config_dict' in config for k in towers):
    raise weights_lib.WeightsError(f'{config_file}: not a CLIPModel config (needs '
                                   'model_type "clip", text_config and vision_config)')
  weight_file = next((os.path.join(path, f) for f in WEIGHT_FILES
                      if os.path.isfile(os.path.join(path, f))), None)
  if weight_file is None:
    raise weights_lib.WeightsError(f'CLIP weights: none of {" / ".join(WEIGHT_FILES)} in '
                                   f'{path}. {WHERE}')
  text_cfg = _tower_config(towers['text'], _TEXT_DEFAULTS, config_file,
                           extra=lambda c: dict(vocab_size=c['vocab_size'],
                                                context_length=c['max_position_embeddings']))
  image_cfg = _tower_config(towers['vision'], _VISION_DEFAULTS, config_file,
                            extra=lambda c: dict(image_size=c['image_size'],
                                                 patch_size=c['patch_size'],
                                                 channels=c['num_channels']))
  image_tower = ImageTower(image_cfg, int(config.get('projection_dim', 512)))
  text_tower = TextTower(text_cfg)
  size, mean, std = _preprocessing(path, image_cfg.image_size)
  if size != image_cfg.image_size:
    raise weights_lib.WeightsError(f'{path}: preprocessor crop size {size} differs from '
                                   f'vision_config.image_size {image_cfg.image_size}')
  tokenizer = ClipTokenizer.from_dir(path, text_cfg.context_length) if with_tokenizer else path

  length = text_cfg.context_length
  abstract = {
      'image': jax.eval_shape(image_tower.init, jax.random.key(0), jax.ShapeDtypeStruct(
          (1, size, size, image_cfg.channels), jnp.float32))['params'],
      'text': jax.eval_shape(text_tower.init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, length), jnp.int32),
                             jax.ShapeDtypeStruct((1, length), jnp.int32))['params'],
  }
  tensors = _read_weights(weight_file)
  params = weights_lib.fill_params(abstract, _assign, tensors, weight_file, ignore=_UNUSED)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  return ClipBackbone(image_tower, text_tower, params, tokenizer, mean, std)
