"""Flax SlowFast vs pytorchvideo's `create_slowfast` (the SlowFast R50 topology).

pytorchvideo builds the reference network; its random weights are saved in the three
published layouts (pytorchvideo names; SlowFast-repository names under 'model_state';
the model zoo's Caffe2 pickle of numpy blobs, written as Python 2 wrote it), loaded
through `load_slowfast`, and the pooled 2-pathway features are compared. Widths are
tiny and the clip small (8 Fast frames of 64x64) so it runs in seconds; the depths
(3, 4, 6, 3), kernels and strides are R50's.
"""
import os
import pickle

import jax
import numpy as np
import pytest
import torch

from momentdiff_jax.features import slowfast as slowfast_lib  # pylint: disable=g-import-not-at-top
from momentdiff_jax.features import weights as weights_lib  # pylint: disable=g-import-not-at-top
from tests import backbone_fixtures  # pylint: disable=g-import-not-at-top

T_FAST, SIZE, ALPHA = 8, 64, 4


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  model = backbone_fixtures.tiny_slowfast_model(t_fast=T_FAST, size=SIZE, alpha=ALPHA)
  d = tmp_path_factory.mktemp('slowfast')
  for layout in ('pytorchvideo', 'slowfast_repo'):
    backbone_fixtures.write_tiny_slowfast(str(d / f'{layout}.pyth'), model, layout)
  backbone_fixtures.write_python2_pickle(
      str(d / 'caffe2.pkl'), {'blobs': backbone_fixtures.caffe2_blobs(model)})
  frames = np.random.default_rng(0).normal(size=(2, T_FAST, SIZE, SIZE, 3)).astype(np.float32)
  fast = torch.tensor(frames).permute(0, 4, 1, 2, 3)  # (N, C, T, H, W)
  slow = torch.index_select(fast, 2, torch.linspace(0, T_FAST - 1, T_FAST // ALPHA).long())
  with torch.no_grad():
    x = [slow, fast]
    for block in model.blocks[:5]:
      x = block(x)
    features = model.blocks[5](x).flatten(1).numpy()  # pooled, concatenated Slow|Fast
  return d, frames, features


@pytest.fixture(scope='module')
def backbone(reference):
  return slowfast_lib.load_slowfast(str(reference[0] / 'pytorchvideo.pyth'))


def test_features_match_pytorchvideo(reference, backbone):
  _, frames, expected = reference
  assert backbone.alpha == 4 and backbone.num_frames == 32
  assert backbone.feature_dim == 256 + 32 == expected.shape[1]
  ours = np.asarray(backbone.encode_clips(frames))
  scale = np.abs(expected).max()
  assert scale > 1e-2
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * scale)


def test_slowfast_repo_layout_loads_the_same_variables(reference, backbone):
  """The same weights under SlowFast-repository names, nested under 'model_state'."""
  other = slowfast_lib.load_slowfast(str(reference[0] / 'slowfast_repo.pyth'))
  assert other.model.cfg == backbone.model.cfg
  ours, theirs = _flat(backbone.params), _flat(other.params)
  assert ours.keys() == theirs.keys() and len(ours) > 300
  for k in ours:
    np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def _flat(variables):
  return {jax.tree_util.keystr(k): np.asarray(x)
          for k, x in jax.tree_util.tree_leaves_with_path(variables)}


def test_caffe2_pickle_loads_the_same_variables(reference, backbone):
  """The model zoo's Caffe2 layout (`{'blobs': {conv1_w, res2_0_branch2a_bn_riv, ...}}`,
  with SGD momenta, lr and iteration blobs), read without unpickling code."""
  path = str(reference[0] / 'caffe2.pkl')
  with open(path, 'rb') as f:
    assert b'numpy.core.multiarray\n_reconstruct' in f.read(4096)   # as Python 2 wrote it
  blobs = weights_lib.read_tensors(path)
  assert 't_pool1_subsample_bn_riv' in blobs and 'res2_0_branch2a_w_momentum' in blobs
  other = slowfast_lib.load_slowfast(path)
  assert other.model.cfg == backbone.model.cfg
  ours, theirs = _flat(backbone.params), _flat(other.params)
  assert ours.keys() == theirs.keys()
  for k in ours:
    np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def test_caffe2_names_follow_slowfast_converter():
  """Blob names from the comments of SlowFast's `c2_model_loading.py`, and its rules."""
  cases = {'conv1_w': 's1.pathway0_stem.conv.weight',
           't_conv1_w': 's1.pathway1_stem.conv.weight',
           'res_conv1_bn_s': 's1.pathway0_stem.bn.weight',
           't_pool1_subsample_w': 's1_fuse.conv_f2s.weight',
           't_res4_5_branch2c_bn_subsample_bn_rm': 's4_fuse.bn.running_mean',
           'res4_4_branch2c_bn_b': 's4.pathway0_res4.branch2.c_bn.bias',
           'res4_0_branch1_w': 's4.pathway0_res0.branch1.weight',
           't_res3_1_branch2a_bn_riv': 's3.pathway1_res1.branch2.a_bn.running_var',
           'pred_w': 'head.projection.weight', 'conv1_w_momentum': None, 'lr': None}
  for blob, name in cases.items():
    assert slowfast_lib.caffe2_to_repo_name(blob) == name, blob
  kept = slowfast_lib.from_caffe2({'conv1_w_momentum': 1, 'model_iter': 2, 'lr': 3,
                                   'conv1_w': 4, 'mystery_w': 5})
  assert kept == {'s1.pathway0_stem.conv.weight': 4, 'mystery_w': 5}


class _Payload:
  """Unpickling this runs a shell command (what a malicious .pkl would do)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


class _Exec:
  def __reduce__(self):
    return exec, ('open("/tmp/never", "w")',)


def test_pickle_with_code_is_refused_by_name(tmp_path):
  marker = tmp_path / 'ran'
  blobs = {'conv1_w': np.ones((2, 3, 1, 1, 1), np.float32)}
  # Patterns: the refused global by name (protocol 2 writes builtins as __builtin__).
  cases = [({'blobs': {**blobs, 'evil': _Payload(marker)}},
            rf'global {os.system.__module__}\.system'),
           ({'blobs': blobs, 'x': [_Exec()]}, r'global (__builtin__|builtins)\.exec'),
           ({'blobs': {'obj': np.array([1, 'a'], dtype=object)}}, 'an object array')]
  for i, (obj, why) in enumerate(cases):
    for protocol in (2, 5):
      path = tmp_path / f'bad{i}_{protocol}.pkl'
      path.write_bytes(pickle.dumps(obj, protocol=protocol))
      with pytest.raises(weights_lib.WeightsError, match=why):
        slowfast_lib.load_slowfast(str(path))
  assert not marker.exists()
  # Valid Python 3 pickles of the same arrays (protocols 2-5) read back exactly.
  for protocol in (2, 4, 5):
    path = tmp_path / f'ok{protocol}.pkl'
    path.write_bytes(pickle.dumps({'blobs': {**blobs, 'it': np.int64(5)}}, protocol=protocol))
    got = weights_lib.read_tensors(str(path))
    np.testing.assert_array_equal(got['conv1_w'], blobs['conv1_w'])
    assert got['it'] == 5


def test_slow_indices_are_torch_linspace():
  for t, alpha in ((32, 4), (8, 4), (64, 8), (12, 4)):
    ref = torch.linspace(0, t - 1, t // alpha).long().numpy()
    np.testing.assert_array_equal(slowfast_lib.slow_indices(t, alpha), ref)


def test_bad_files_and_shapes(reference, backbone, tmp_path):
  d, frames, _ = reference
  with pytest.raises(weights_lib.WeightsError, match='not found.*SLOWFAST_8x8_R50'):
    slowfast_lib.load_slowfast(str(tmp_path / 'missing.pyth'))
  (tmp_path / 'SLOWFAST_8x8_R50.pkl').write_bytes(b'not a pickle')
  with pytest.raises(weights_lib.WeightsError, match='not a readable Caffe2 .pkl'):
    slowfast_lib.load_slowfast(str(tmp_path / 'SLOWFAST_8x8_R50.pkl'))
  (tmp_path / 'plain.pkl').write_bytes(pickle.dumps({'conv1_w': np.zeros(2)}))
  with pytest.raises(weights_lib.WeightsError, match=r'expected a Caffe2 checkpoint.*conv1_w'):
    slowfast_lib.load_slowfast(str(tmp_path / 'plain.pkl'))
  state = torch.load(d / 'pytorchvideo.pyth', weights_only=True)
  del state['blocks.3.multipathway_blocks.1.res_blocks.2.branch2.norm_b.running_var']
  state['blocks.9.extra.weight'] = torch.zeros(2)
  torch.save(state, tmp_path / 'broken.pyth')
  with pytest.raises(weights_lib.WeightsError) as err:
    slowfast_lib.load_slowfast(str(tmp_path / 'broken.pyth'))
  assert 'blocks.9.extra.weight (2,)' in str(err.value)
  assert 'batch_stats/res3_1/block2/b_bn/var (4,)' in str(err.value)
  with pytest.raises(ValueError, match='multiple of alpha=4'):
    backbone.encode_clips(frames[:, :6])


def test_full_r50_layout_is_inferred():
  """The published R50 8x8 tensor layout (pytorchvideo's slowfast_r50 defaults) gives
  the 2304-d feature and the documented architecture (`r50_config`)."""
  from momentdiff_jax.features.slowfast_model import r50_config  # pylint: disable=g-import-not-at-top
  model = backbone_fixtures.create_slowfast_builder()(model_depth=50)
  shapes = {k: np.zeros(tuple(v.shape), np.float32) for k, v in model.state_dict().items()}
  cfg = slowfast_lib.infer_config(shapes, 'SLOWFAST_8X8_R50.pyth')
  assert cfg == r50_config() and cfg.feature_dim == 2304
  assert [s.depth for s in cfg.stages[0]] == [3, 4, 6, 3]
