"""SlowFast R50 backbone for the 2304-d clip features, loaded from a checkpoint file.

`load_slowfast(path)` reads a SlowFast ResNet checkpoint in any of three layouts:
* the SlowFast model zoo's Caffe2 pickle `SLOWFAST_8x8_R50.pkl` (`{'blobs': {...}}`,
  names `conv1_w`, `res2_0_branch2a_bn_s`, `t_pool1_subsample_w`, ...): the weights
  behind the public HERO / Moment-DETR SlowFast features; read by `numpy_pickle`
  (numpy arrays only, no code) and renamed as SlowFast's own Caffe2 converter does;
* a SlowFast-repository PyTorch checkpoint (`{'model_state': state_dict, ...}`, names
  `s1.pathway0_stem.conv.weight`, ...);
* pytorchvideo's (`SLOWFAST_8x8_R50.pyth` of its model zoo, names
  `blocks.0.multipathway_blocks.0.conv.weight`, ...): the same architecture, another
  training run;
or such a state_dict in a `.safetensors` file. Widths, depths and kernel sizes are read
off the tensor shapes, so R18/R50/R101 layouts and tiny test networks load through the
same code; the classifier is skipped (features are the pooled pathways before it).
"""
import collections
import re

import jax
import jax.numpy as jnp
import numpy as np

from momentdiff_jax.features import weights as weights_lib
from momentdiff_jax.features.slowfast_model import SlowFast, SlowFastConfig, StageConfig

# Kinetics normalization of both SlowFast code bases (SlowFast `DATA.MEAN` / `DATA.STD`
# defaults; pytorchvideo's SlowFast hub example), on RGB in [0, 1].
SLOWFAST_MEAN = (0.45, 0.45, 0.45)
SLOWFAST_STD = (0.225, 0.225, 0.225)
WHERE = ('The public HERO / Moment-DETR SlowFast features were extracted with the SlowFast '
         'model zoo\'s Caffe2 checkpoint SLOWFAST_8x8_R50.pkl (github.com/facebookresearch/'
         'SlowFast, MODEL_ZOO.md, Kinetics-400 SlowFast R50 8x8); pytorchvideo\'s '
         'SLOWFAST_8x8_R50.pyth has the same architecture but other weights '
         '(docs/features.md).')

# Module names of both layouts -> ours (see slowfast_model.py).
_LAYOUTS = (
    (re.compile(r'blocks\.0\.multipathway_blocks\.(\d)\.(conv|norm)$'),
     lambda m: f'stem{m[1]}/{_RENAME[m[2]]}'),
    (re.compile(r'blocks\.(\d)\.multipathway_fusion\.(conv_fast_to_slow|norm)$'),
     lambda m: f'fuse{m[1]}/{_RENAME[m[2]]}'),
    (re.compile(r'blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.'
                r'(branch1_conv|branch1_norm|branch2\.(?:conv|norm)_[abc])$'),
     lambda m: f'res{m[1]}_{m[2]}/block{m[3]}/{_RENAME[m[4]]}'),
    (re.compile(r's1\.pathway(\d)_stem\.(conv|bn)$'),
     lambda m: f'stem{m[1]}/{_RENAME[m[2]]}'),
    (re.compile(r's(\d)_fuse\.(conv_f2s|bn)$'),
     lambda m: f'fuse{int(m[1]) - 1}/{_RENAME[m[2]]}'),
    (re.compile(r's(\d)\.pathway(\d)_res(\d+)\.(branch1|branch1_bn|branch2\.[abc](?:_bn)?)$'),
     lambda m: f'res{int(m[1]) - 1}_{m[2]}/block{m[3]}/{_RENAME[m[4]]}'),
)
_RENAME = {'conv': 'conv', 'norm': 'bn', 'bn': 'bn', 'conv_fast_to_slow': 'conv',
           'conv_f2s': 'conv', 'branch1_conv': 'branch1', 'branch1': 'branch1',
           'branch1_norm': 'branch1_bn', 'branch1_bn': 'branch1_bn',
           **{f'branch2.conv_{c}': c for c in 'abc'}, **{f'branch2.norm_{c}': f'{c}_bn' for c in 'abc'},
           **{f'branch2.{c}': c for c in 'abc'}, **{f'branch2.{c}_bn': f'{c}_bn' for c in 'abc'}}
# Caffe2 blob names (model zoo .pkl) -> SlowFast-repository names, the renaming of
# SlowFast's `utils/c2_model_loading.py` (what HERO's extractor loaded the file with):
# `t_` marks the Fast pathway; BatchNorm `_s/_b/_rm/_riv` are weight, bias, running
# mean and running variance; a fusion conv is named after the Fast block before it.
_C2_BN = {'s': 'weight', 'b': 'bias', 'rm': 'running_mean', 'riv': 'running_var'}
_C2_RES = r'(t_)?res(\d+)_(\d+)_branch'
_C2_NAMES = (
    (r'(t_)?conv1_w', lambda m: f's1.pathway{_pw(m)}_stem.conv.weight'),
    (r'(t_)?res_conv1_bn_(s|b|rm|riv)', lambda m: f's1.pathway{_pw(m)}_stem.bn.{_C2_BN[m[2]]}'),
    (r't_pool1_subsample_w', lambda m: 's1_fuse.conv_f2s.weight'),
    (r't_pool1_subsample_bn_(s|b|rm|riv)', lambda m: f's1_fuse.bn.{_C2_BN[m[1]]}'),
    (r't_res(\d+)_\d+_branch2c_bn_subsample_w', lambda m: f's{m[1]}_fuse.conv_f2s.weight'),
    (r't_res(\d+)_\d+_branch2c_bn_subsample_bn_(s|b|rm|riv)',
     lambda m: f's{m[1]}_fuse.bn.{_C2_BN[m[2]]}'),
    (_C2_RES + r'2([abc])_w', lambda m: f'{_c2_block(m)}.branch2.{m[4]}.weight'),
    (_C2_RES + r'2([abc])_bn_(s|b|rm|riv)',
     lambda m: f'{_c2_block(m)}.branch2.{m[4]}_bn.{_C2_BN[m[5]]}'),
    (_C2_RES + r'1_w', lambda m: f'{_c2_block(m)}.branch1.weight'),
    (_C2_RES + r'1_bn_(s|b|rm|riv)', lambda m: f'{_c2_block(m)}.branch1_bn.{_C2_BN[m[4]]}'),
    (r'pred_(w|b)', lambda m: f'head.projection.{"weight" if m[1] == "w" else "bias"}'),
)
_pw = lambda m: 1 if m[1] else 0
_c2_block = lambda m: f's{m[2]}.pathway{_pw(m)}_res{m[3]}'
# Training state in Caffe2 files (SGD momenta, learning rate, iteration): SlowFast's
# converter skips unmapped blobs whose names contain these words, and so do we.
_C2_TRAINING = ('momentum', 'lr', 'model_iter')
# Classifier (features are taken before it) and BatchNorm step counters.
_UNUSED = re.compile(r'(blocks\.\d+\.proj|head\.projection)\.(weight|bias)$|'
                     r'\.num_batches_tracked$')
_CONV5D = lambda w: np.transpose(w, (2, 3, 4, 1, 0))  # (O, I, t, h, w) -> (t, h, w, I, O)
_LEAVES = {'weight': None, 'bias': ('params', 'bias', np.asarray),
           'running_mean': ('batch_stats', 'mean', np.asarray),
           'running_var': ('batch_stats', 'var', np.asarray)}


def _module(name: str):
  """torch tensor name -> (our module path, torch leaf) or None."""
  prefix, _, leaf = name.rpartition('.')
  for pattern, rename in _LAYOUTS:
    m = pattern.match(prefix)
    if m:
      return rename(m), leaf
  return None


def caffe2_to_repo_name(blob: str):
  """Caffe2 blob name -> SlowFast-repository tensor name, or None (no such layer)."""
  for pattern, rename in _C2_NAMES:
    m = re.fullmatch(pattern, blob)
    if m:
      return rename(m)
  return None


def from_caffe2(blobs: dict) -> dict:
  """Caffe2 blobs -> tensors under SlowFast-repository names; training state dropped,
  unknown blobs kept under their own names (so the strict loader lists them)."""
  out = {}
  for blob, value in blobs.items():
    name = caffe2_to_repo_name(blob)
    if name is None and any(w in blob for w in _C2_TRAINING):
      continue
    out[name or blob] = value
  return out


def _assign(name: str):
  found = _module(name)
  if found is None or found[1] not in _LEAVES:
    return None
  module, leaf = found
  if leaf == 'weight':  # conv kernel or BatchNorm scale, told apart by the module name
    if module.endswith('bn'):
      return f'params/{module}/scale', np.asarray
    return f'params/{module}/kernel', _CONV5D
  collection, ours, fn = _LEAVES[leaf]
  return f'{collection}/{module}/{ours}', fn


def infer_config(tensors: dict, source: str, alpha: int = 4) -> SlowFastConfig:
  """Widths, depths and kernels of a SlowFast ResNet from its conv weight shapes."""
  convs = {}
  for name, value in tensors.items():
    found = _module(name)
    if found and found[1] == 'weight' and not found[0].endswith('bn'):
      convs[found[0]] = value.shape
  def need(key):
    if key not in convs:
      raise weights_lib.WeightsError(f'{source}: no SlowFast tensor for {key} (is this a '
                                     f'SlowFast ResNet checkpoint?). {WHERE}')
    return convs[key]
  stems = [need(f'stem{p}/conv') for p in range(2)]
  fuse_out, fuse_t, i = [], None, 0
  while f'fuse{i}/conv' in convs:
    shape = convs[f'fuse{i}/conv']
    fuse_out.append(shape[0])
    fuse_t = shape[2]
    i += 1
  depth = collections.defaultdict(int)
  for key in convs:
    m = re.match(r'res(\d+)_(\d)/block(\d+)/a$', key)
    if m:
      depth[int(m[1]), int(m[2])] = max(depth[int(m[1]), int(m[2])], int(m[3]) + 1)
  num_stages = max((s for s, _ in depth), default=0)
  if num_stages == 0 or not fuse_out:
    raise weights_lib.WeightsError(f'{source}: no residual stages / fusion layers found. '
                                   f'{WHERE}')
  stages = []
  for p in range(2):
    row = []
    for s in range(1, num_stages + 1):
      a, c = need(f'res{s}_{p}/block0/a'), need(f'res{s}_{p}/block0/c')
      b = need(f'res{s}_{p}/block0/b')
      # ResNet stage strides (1, 2, 2, 2): only the first stage keeps the resolution.
      row.append(StageConfig(depth=depth[s, p], inner=a[0], out=c[0], a_kernel=tuple(a[2:]),
                             b_kernel=tuple(b[2:]), spatial_stride=1 if s == 1 else 2))
    stages.append(tuple(row))
  return SlowFastConfig(stem_out=(stems[0][0], stems[1][0]),
                        stem_kernel=(tuple(stems[0][2:]), tuple(stems[1][2:])),
                        stages=tuple(stages), fuse_out=tuple(fuse_out), fuse_kernel_t=fuse_t,
                        alpha=alpha, in_channels=stems[0][1])


def slow_indices(num_frames: int, alpha: int) -> np.ndarray:
  """Slow pathway frames: `linspace(0, T-1, T // alpha)` truncated, as both code bases."""
  return np.linspace(0, num_frames - 1, num_frames // alpha).astype(np.int64)


class SlowFastBackbone:
  """SlowFast with its parameters, jit-compiled.

  Attributes: alpha (4), num_frames (32 Fast frames per clip, 8x8 setting), crop_size
  (224), mean, std (RGB in [0, 1]), feature_dim (2304 for R50).
  """

  def __init__(self, model: SlowFast, variables: dict, num_frames: int = 32,
               crop_size: int = 224, mean=SLOWFAST_MEAN, std=SLOWFAST_STD):
    # `params` (as ClipBackbone's) is the whole variable dict `apply_clips` takes:
    # {'params': conv kernels / BN scales, 'batch_stats': BN running statistics}.
    self.model, self.params = model, variables
    self.alpha = model.cfg.alpha
    self.num_frames, self.crop_size = num_frames, crop_size
    self.mean, self.std = tuple(mean), tuple(std)
    self.feature_dim = model.cfg.feature_dim
    self._encode = jax.jit(self.apply_clips)

  def apply_clips(self, params, frames):
    """Pure function of (params, frames (N, T, H, W, C)) -> (N, feature_dim)."""
    slow = frames[:, slow_indices(frames.shape[1], self.alpha)]
    return self.model.apply(params, slow, frames)

  def encode_clips(self, frames) -> jax.Array:
    """frames float32 (N, T_fast, H, W, 3), normalized -> (N, feature_dim).

    The Slow pathway sees T_fast // alpha of the frames (`slow_indices`); each
    pathway's last feature map is averaged over time and space (what the public
    2304-d features hold: the pooled input of the classifier), Slow first.
    """
    shape = tuple(frames.shape)
    if (len(shape) != 5 or shape[-1] != self.model.cfg.in_channels
        or shape[1] < self.alpha or shape[1] % self.alpha):
      raise ValueError(f'encode_clips: frames shape {shape}, expected (N, T, H, W, '
                       f'{self.model.cfg.in_channels}) with T a multiple of alpha='
                       f'{self.alpha} (T={self.num_frames} for the 8x8 weights)')
    return self._encode(self.params, jnp.asarray(frames, jnp.float32))


def load_slowfast(path: str, alpha: int = 4, num_frames: int = 32,
                  crop_size: int = 224) -> SlowFastBackbone:
  """Loads a SlowFast ResNet checkpoint (Caffe2 .pkl, .pyth/.pth/.pt/.bin, .safetensors)."""
  weights_lib.require_file(path, 'SlowFast weights', WHERE)
  tensors = weights_lib.read_tensors(path)
  if tensors and not any('.' in name for name in tensors):  # Caffe2 blob names
    tensors = from_caffe2(tensors)
  cfg = infer_config(tensors, path, alpha)
  model = SlowFast(cfg)
  frames = jax.ShapeDtypeStruct((1, alpha, 32, 32, cfg.in_channels), jnp.float32)
  slow = jax.ShapeDtypeStruct((1, 1, 32, 32, cfg.in_channels), jnp.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), slow, frames)
  ignore = [n for n in tensors if _UNUSED.search(n)]
  variables = weights_lib.fill_params(abstract, _assign, tensors, path, ignore=ignore)
  variables = jax.tree_util.tree_map(jnp.asarray, variables)
  return SlowFastBackbone(model, variables, num_frames, crop_size)
