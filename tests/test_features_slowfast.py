"""Flax SlowFast vs pytorchvideo's `create_slowfast` (the SlowFast R50 topology).

pytorchvideo builds the reference network; its random weights are saved in both
published layouts (pytorchvideo names, and SlowFast-repository names under
'model_state'), loaded through `load_slowfast`, and the pooled 2-pathway features are
compared. Widths are tiny and the clip small (8 Fast frames of 64x64) so it runs in
seconds; the depths (3, 4, 6, 3), kernels and strides are R50's.
"""
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
  flat = lambda v: {jax.tree_util.keystr(k): np.asarray(x)
                    for k, x in jax.tree_util.tree_leaves_with_path(v)}
  ours, theirs = flat(backbone.params), flat(other.params)
  assert ours.keys() == theirs.keys() and len(ours) > 300
  for k in ours:
    np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def test_slow_indices_are_torch_linspace():
  for t, alpha in ((32, 4), (8, 4), (64, 8), (12, 4)):
    ref = torch.linspace(0, t - 1, t // alpha).long().numpy()
    np.testing.assert_array_equal(slowfast_lib.slow_indices(t, alpha), ref)


def test_bad_files_and_shapes(reference, backbone, tmp_path):
  d, frames, _ = reference
  with pytest.raises(weights_lib.WeightsError, match='not found.*SLOWFAST_8x8_R50'):
    slowfast_lib.load_slowfast(str(tmp_path / 'missing.pyth'))
  (tmp_path / 'SLOWFAST_8x8_R50.pkl').write_bytes(b'not read')
  with pytest.raises(weights_lib.WeightsError, match='pickles and are not read'):
    slowfast_lib.load_slowfast(str(tmp_path / 'SLOWFAST_8x8_R50.pkl'))
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
