"""Tiny random backbones written as users' weight files (no network), for tests.

* `write_tiny_clip(directory, texts)`: a transformers `CLIPModel` from a tiny config,
  `save_pretrained` into `directory` with a BPE vocabulary learned from `texts`.
* `write_tiny_slowfast(path)`: pytorchvideo's `create_slowfast` with tiny widths, its
  state_dict saved with `torch.save` (pytorchvideo names; `layout='slowfast_repo'` writes
  the SlowFast repository's names under 'model_state').
Both need torch (+ transformers / pytorchvideo), all in the `[test]` extra.
"""
import importlib
import os
import re
import sys
import types
import warnings

from tests import clip_vocab


def tiny_clip_model(vocab_size: int, act: str = 'quick_gelu', image_size: int = 40,
                    seed: int = 0):
  """A random transformers CLIPModel (text 32 wide, image 48 wide, 2 layers each)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=40,
                       num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=77, hidden_act=act),
      vision_config=dict(hidden_size=48, intermediate_size=56, num_hidden_layers=2,
                         num_attention_heads=4, image_size=image_size, patch_size=8,
                         hidden_act=act),
      projection_dim=24)
  torch.manual_seed(seed)
  model = transformers.CLIPModel(cfg).eval()
  with torch.no_grad():  # random LayerNorm affine params and biases, not 1/0
    for name, p in model.named_parameters():
      if 'norm' in name or name.endswith('bias'):
        p.add_(0.1 * torch.randn_like(p))
  return model


def write_tiny_clip(directory: str, texts, act: str = 'quick_gelu', image_size: int = 40,
                    num_merges: int = 60):
  """Writes a tiny CLIP directory (config, safetensors, vocab); returns the torch model."""
  vocab_size = clip_vocab.write_vocab(directory, texts, num_merges=num_merges)
  model = tiny_clip_model(vocab_size, act, image_size)
  model.save_pretrained(directory)
  return model


def write_small_clip(directory: str, texts, seed: int = 0) -> str:
  """The smaller CLIP directory of the extraction and demo tests (one layer of width 16
  per tower, 32x32 images in 16x16 patches, 12-d embeds, 40 merges learned from
  `texts`, default LayerNorms); returns `directory`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  vocab_size = clip_vocab.write_vocab(directory, texts, num_merges=40)
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=24,
                       num_hidden_layers=1, num_attention_heads=2,
                       max_position_embeddings=77),
      vision_config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                         num_attention_heads=2, image_size=32, patch_size=16),
      projection_dim=12)
  torch.manual_seed(seed)
  transformers.CLIPModel(cfg).eval().save_pretrained(directory)
  return directory


def create_slowfast_builder():
  """pytorchvideo's `create_slowfast`. Its head module imports torchvision's RoIAlign
  (used by detection heads only); without a torchvision build matching torch, a
  stand-in is registered for that import alone and removed again."""
  try:
    importlib.import_module('torchvision.ops')
    stub, saved = False, {}
  except Exception:  # pylint: disable=broad-except
    stub = True
    tv, ops = types.ModuleType('torchvision'), types.ModuleType('torchvision.ops')
    ops.RoIAlign = type('RoIAlign', (), {})
    tv.ops = ops
    saved = {k: sys.modules.get(k) for k in ('torchvision', 'torchvision.ops')}
    sys.modules.update({'torchvision': tv, 'torchvision.ops': ops})
  try:
    with warnings.catch_warnings():  # pytorchvideo's torch.jit.script deprecation notices
      warnings.simplefilter('ignore', DeprecationWarning)
      return importlib.import_module('pytorchvideo.models.slowfast').create_slowfast
  finally:
    if stub:
      for k, v in saved.items():
        if v is None:
          sys.modules.pop(k, None)
        else:
          sys.modules[k] = v


def tiny_slowfast_model(model_depth: int = 50, t_fast: int = 8, size: int = 64,
                        alpha: int = 4, seed: int = 0):
  """pytorchvideo SlowFast with R`model_depth` depths/kernels, stem widths 8 / 1
  (Slow out 256, Fast out 32), random weights and BatchNorm statistics, eval mode.
  The head pool fits (t_fast, size, size) clips."""
  import torch  # pylint: disable=g-import-not-at-top
  final = size // 32  # stem /4, then stages 2-4 /2 each
  torch.manual_seed(seed)
  builder = create_slowfast_builder()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    model = builder(
        model_depth=model_depth, stem_dim_outs=(8, 1), slowfast_channel_reduction_ratio=(8,),
        model_num_class=5, head_pool_kernel_sizes=((t_fast // alpha, final, final),
                                                   (t_fast, final, final))).eval()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm3d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.1)
        module.running_mean.normal_(0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  return model


_TO_REPO = [  # pytorchvideo module names -> SlowFast repository names
    (r'blocks\.0\.multipathway_blocks\.(\d)\.conv', r's1.pathway\1_stem.conv'),
    (r'blocks\.0\.multipathway_blocks\.(\d)\.norm', r's1.pathway\1_stem.bn'),
    (r'blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow',
     lambda m: f's{int(m[1]) + 1}_fuse.conv_f2s'),
    (r'blocks\.(\d)\.multipathway_fusion\.norm', lambda m: f's{int(m[1]) + 1}_fuse.bn'),
    (r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.',
     lambda m: f's{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}.'),
    (r'branch1_conv', 'branch1'), (r'branch1_norm', 'branch1_bn'),
    (r'branch2\.conv_([abc])', r'branch2.\1'), (r'branch2\.norm_([abc])', r'branch2.\1_bn'),
    (r'blocks\.6\.proj', 'head.projection'),
]


def to_slowfast_repo_name(name: str) -> str:
  for pattern, repl in _TO_REPO:
    name = re.sub(pattern, repl, name)
  return name


def write_tiny_slowfast(path: str, model=None, layout: str = 'pytorchvideo', **kwargs):
  """Saves a tiny SlowFast checkpoint to `path` (.pyth); returns the torch model."""
  import torch  # pylint: disable=g-import-not-at-top
  model = model if model is not None else tiny_slowfast_model(**kwargs)
  state = model.state_dict()
  if layout == 'slowfast_repo':
    torch.save({'model_state': {to_slowfast_repo_name(k): v for k, v in state.items()},
                'epoch': 196}, path)
  else:
    torch.save(state, path)
  return model


# SlowFast-repository names -> Caffe2 blob names of the model zoo's .pkl files, the
# inverse of SlowFast's `utils/c2_model_loading.py` renaming (written independently of
# momentdiff_jax.features.slowfast). `t_` marks the Fast pathway; a fusion conv is named
# after the last Fast block of the stage before it.
_BN_TO_C2 = {'weight': 's', 'bias': 'b', 'running_mean': 'rm', 'running_var': 'riv'}


def to_caffe2_name(name: str, fast_depths: dict):
  """A SlowFast-repository tensor name -> its Caffe2 blob name (None: not stored)."""
  if name.endswith('num_batches_tracked'):
    return None
  m = re.fullmatch(r's1\.pathway(\d)_stem\.(conv|bn)\.(\w+)', name)
  if m:
    t = 't_' if m[1] == '1' else ''
    return f'{t}conv1_w' if m[2] == 'conv' else f'{t}res_conv1_bn_{_BN_TO_C2[m[3]]}'
  m = re.fullmatch(r's(\d)_fuse\.(conv_f2s|bn)\.(\w+)', name)
  if m:
    stem = ('t_pool1_subsample' if m[1] == '1' else
            f't_res{m[1]}_{fast_depths[int(m[1])] - 1}_branch2c_bn_subsample')
    return f'{stem}_w' if m[2] == 'conv_f2s' else f'{stem}_bn_{_BN_TO_C2[m[3]]}'
  m = re.fullmatch(r's(\d)\.pathway(\d)_res(\d+)\.(branch1|branch1_bn|branch2\.([abc])'
                   r'(_bn)?)\.(\w+)', name)
  if m:
    prefix = f'{"t_" if m[2] == "1" else ""}res{m[1]}_{m[3]}_'
    if m[4] == 'branch1':
      return prefix + 'branch1_w'
    if m[4] == 'branch1_bn':
      return prefix + f'branch1_bn_{_BN_TO_C2[m[7]]}'
    if m[6]:
      return prefix + f'branch2{m[5]}_bn_{_BN_TO_C2[m[7]]}'
    return prefix + f'branch2{m[5]}_w'
  m = re.fullmatch(r'head\.projection\.(weight|bias)', name)
  if m:
    return 'pred_w' if m[1] == 'weight' else 'pred_b'
  raise ValueError(f'no Caffe2 name for {name}')


def caffe2_blobs(model) -> dict:
  """The model's tensors as the Caffe2 blobs of a model zoo .pkl (numpy float32), with
  the training state such files also hold (SGD momenta, lr, iteration)."""
  state = {to_slowfast_repo_name(k): v.numpy() for k, v in model.state_dict().items()}
  depths = {}
  for k in state:
    m = re.match(r's(\d)\.pathway1_res(\d+)\.', k)
    if m:
      depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]) + 1)
  blobs = {}
  for k, v in state.items():
    c2 = to_caffe2_name(k, depths)
    if c2 is not None:
      blobs[c2] = v.astype('float32')
      if c2.endswith('_w'):
        blobs[c2 + '_momentum'] = (v * 0.01).astype('float32')
  blobs['lr'] = __import__('numpy').asarray([0.1], 'float32')
  blobs['model_iter'] = __import__('numpy').int64(196000)
  return blobs


def write_python2_pickle(path: str, obj) -> None:
  """Writes `obj` (dicts with str keys, float32/int64 numpy arrays and scalars, str,
  int) as Python 2's cPickle protocol 2 writes numpy data: `numpy.core.multiarray`
  globals and raw array bytes as byte strings (BINSTRING), as in the Caffe2 files."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  out = bytearray(b'\x80\x02')

  def bstr(b: bytes):
    out.extend(b'U' + bytes([len(b)]) + b if len(b) < 256 else
               b'T' + struct.pack('<i', len(b)) + b)

  def dtype(dt):
    out.extend(b'cnumpy\ndtype\n')
    bstr(dt.str[1:].encode())
    out.extend(b'\x89\x88\x87R(K\x03')      # (name, False, True), REDUCE, state: 3,
    bstr(b'<')                                # byte order, then no fields/subarray
    out.extend(b'NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb')

  def save(x):
    if isinstance(x, dict):
      out.extend(b'}(')
      for k, v in x.items():
        bstr(k.encode())
        save(v)
      out.extend(b'u')
    elif isinstance(x, np.ndarray):
      out.extend(b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85')
      bstr(b'b')
      out.extend(b'\x87R(K\x01(')
      for d in x.shape:
        out.extend(b'J' + struct.pack('<i', d))
      out.extend(b't')
      dtype(x.dtype)
      out.extend(b'\x89')                     # not Fortran order
      bstr(np.ascontiguousarray(x).tobytes())
      out.extend(b'tb')
    elif isinstance(x, np.generic):
      out.extend(b'cnumpy.core.multiarray\nscalar\n')
      dtype(x.dtype)
      bstr(x.tobytes())
      out.extend(b'\x86R')
    elif isinstance(x, str):
      bstr(x.encode())
    elif isinstance(x, int):
      out.extend(b'J' + struct.pack('<i', x))
    else:
      raise TypeError(type(x))

  save(obj)
  out.extend(b'.')
  with open(path, 'wb') as f:
    f.write(bytes(out))
