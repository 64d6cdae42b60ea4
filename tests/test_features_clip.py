"""Flax CLIP towers vs transformers' PyTorch CLIPModel, through our directory loader."""
import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy as safetensors_numpy
import torch
import transformers

from momentdiff_jax.features import clip as clip_lib  # pylint: disable=g-import-not-at-top
from momentdiff_jax.features import weights as weights_lib  # pylint: disable=g-import-not-at-top
from tests import backbone_fixtures  # pylint: disable=g-import-not-at-top

TEXTS = ['a person opens the door.', 'He puts the laptop on a table, then sits down!',
         "it's 3 o'clock", 'x' * 5 + ' y' * 90]
VOCAB_TEXTS = TEXTS + ['the person is sitting on a chair and laughing at the door']


@pytest.fixture(scope='module')
def clip_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('clip'))
  model = backbone_fixtures.write_tiny_clip(d, VOCAB_TEXTS)
  with open(os.path.join(d, 'preprocessor_config.json'), 'w') as f:
    json.dump({'crop_size': {'height': 40, 'width': 40}, 'image_mean': [0.5, 0.4, 0.3],
               'image_std': [0.2, 0.3, 0.25]}, f)
  return d, model


@pytest.fixture(scope='module')
def backbone(clip_dir):
  return clip_lib.load_clip(clip_dir[0])


def test_attributes_come_from_the_files(backbone):
  assert backbone.image_size == 40 and backbone.embed_dim == 24
  assert backbone.text_width == 32 and backbone.context_length == 77
  assert backbone.image_mean == (0.5, 0.4, 0.3) and backbone.image_std == (0.2, 0.3, 0.25)


def test_text_last_hidden_state_matches_transformers(clip_dir, backbone):
  _, model = clip_dir
  ids, mask = backbone.tokenize(TEXTS)
  assert mask[-1].sum() == 77  # the long text is truncated to the context
  ours = np.asarray(backbone.encode_text(ids, mask))
  with torch.no_grad():
    ref = model.text_model(input_ids=torch.tensor(ids, dtype=torch.long),
                           attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
  assert ours.shape == (len(TEXTS), 77, 32)
  valid = mask.astype(bool)
  np.testing.assert_allclose(ours[valid], ref[valid], atol=1e-5, rtol=1e-5)
  # cut to the longest of the first three queries: their valid rows are unchanged
  length = int(mask[:3].sum(1).max())
  short = np.asarray(backbone.encode_text(ids[:3, :length], mask[:3, :length]))
  np.testing.assert_allclose(short[valid[:3, :length]], ref[:3][valid[:3]], atol=1e-5,
                             rtol=1e-5)


def test_image_embeds_match_transformers(clip_dir, backbone):
  _, model = clip_dir
  pixels = np.random.default_rng(0).normal(size=(3, 40, 40, 3)).astype(np.float32)
  ours = np.asarray(backbone.encode_images(pixels))
  with torch.no_grad():
    out = model.get_image_features(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2))
  ref = getattr(out, 'pooler_output', out).numpy()  # transformers 5 returns an output object
  assert ours.shape == (3, 24)
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match=r'pixels shape \(3, 32, 32, 3\)'):
    backbone.encode_images(pixels[:, :32, :32])


def test_gelu_variant_and_bin_file_load(tmp_path):
  """Another activation and pytorch_model.bin: sizes and act come from config.json."""
  model = backbone_fixtures.write_tiny_clip(str(tmp_path), VOCAB_TEXTS, act='gelu',
                                           num_merges=20)
  tensors = safetensors_numpy.load_file(str(tmp_path / 'model.safetensors'))
  os.remove(tmp_path / 'model.safetensors')
  torch.save({k: torch.tensor(v) for k, v in tensors.items()}, tmp_path / 'pytorch_model.bin')
  backbone = clip_lib.load_clip(str(tmp_path))
  pixels = np.random.default_rng(1).normal(size=(2, 40, 40, 3)).astype(np.float32)
  with torch.no_grad():
    out = model.get_image_features(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2))
  ref = getattr(out, 'pooler_output', out).numpy()
  np.testing.assert_allclose(np.asarray(backbone.encode_images(pixels)), ref, atol=1e-5)


def test_sharded_weights_load(clip_dir, backbone, tmp_path):
  src, model = clip_dir
  model.save_pretrained(str(tmp_path), max_shard_size='40KB')
  with open(tmp_path / 'model.safetensors.index.json') as f:
    assert len(set(json.load(f)['weight_map'].values())) > 1
  for name in ('vocab.json', 'merges.txt', 'preprocessor_config.json'):
    os.symlink(os.path.join(src, name), tmp_path / name)
  sharded = clip_lib.load_clip(str(tmp_path))
  same = jax.tree_util.tree_map(np.array_equal, sharded.params, backbone.params)
  assert all(jax.tree_util.tree_leaves(same))


def test_missing_and_mismatched_files(clip_dir, tmp_path):
  src, _ = clip_dir
  for name in ('config.json', 'vocab.json', 'merges.txt'):
    os.symlink(os.path.join(src, name), tmp_path / name)
  with pytest.raises(weights_lib.WeightsError,
                     match='model.safetensors / pytorch_model.bin / .*openai/clip-vit-base-patch32'):
    clip_lib.load_clip(str(tmp_path))
  with pytest.raises(weights_lib.WeightsError, match='directory not found'):
    clip_lib.load_clip(str(tmp_path / 'nope'))
  with pytest.raises(weights_lib.WeightsError, match='config.json is a file; load_clip takes'):
    clip_lib.load_clip(str(tmp_path / 'config.json'))

  bad_cfg = tmp_path / 'other'
  bad_cfg.mkdir()
  with open(bad_cfg / 'config.json', 'w') as f:
    json.dump({'model_type': 'bert', 'hidden_size': 32}, f)
  with pytest.raises(weights_lib.WeightsError, match='other/config.json: not a CLIPModel'):
    clip_lib.load_clip(str(bad_cfg))

  tensors = safetensors_numpy.load_file(os.path.join(src, 'model.safetensors'))
  tensors['vision_model.extra.weight'] = np.zeros(3, np.float32)
  del tensors['text_model.encoder.layers.1.mlp.fc2.bias']
  tensors['vision_model.post_layernorm.weight'] = np.zeros(5, np.float32)
  safetensors_numpy.save_file(tensors, str(tmp_path / 'model.safetensors'))
  with pytest.raises(weights_lib.WeightsError) as err:
    clip_lib.load_clip(str(tmp_path))
  msg = str(err.value)
  assert 'vision_model.extra.weight (3,)' in msg  # unmapped
  assert 'text/encoder/layers_1/fc2/bias (32,)' in msg  # unfilled
  assert 'vision_model.post_layernorm.weight (5,)' in msg  # shape


class Payload:  # unpickling it would import and construct an arbitrary class
  pass


def test_torch_pickle_with_code_is_refused(tmp_path):
  path = str(tmp_path / 'bad.bin')
  torch.save({'a': Payload()}, path)
  with pytest.raises(weights_lib.WeightsError, match='weights_only=True'):
    weights_lib.read_tensors(path)
