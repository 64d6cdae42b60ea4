"""Video feature source order: weights trained CLIP-first read a SlowFast-first dataset."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.model import MomentDiff, abstract_params
from momentdiff_jax.release import torch_mapping as tm
from momentdiff_jax.release import video_sources as vs

D, H, FFN, DT = 32, 4, 48, 12
DC, DS = 4, 6                      # "CLIP" and "SlowFast" sizes (tiny)
DV = DC + DS + 2                   # + TEF
RELEASE = ['clip_features', 'slowfast_features']        # train_charades_sf.sh order


def _cfg():
  c = base_config().model
  c.hidden_dim, c.num_heads, c.ffn_dim = D, H, FFN
  return c


@pytest.fixture(scope='module')
def converted():
  """Random weights in the release's layout (CLIP first), converted through the table."""
  cfg = _cfg()
  r = np.random.RandomState(0)
  ours = jax.tree.map(lambda s: np.asarray(r.randn(*s.shape), np.float32),
                      abstract_params(cfg, DV, DT))
  table = tm.build_table(cfg, DV, DT)
  sd = tm.flax_to_torch(ours, table, skipped_rng=np.random.RandomState(1))
  params, _ = tm.torch_to_flax(sd, table)
  return cfg, sd, params


def _inputs(seed=0):
  r = np.random.RandomState(seed)
  b, lv, lt = 2, 9, 5
  clip, sf = r.randn(b, lv, DC), r.randn(b, lv, DS)
  tef = np.stack(np.broadcast_arrays(np.arange(lv) / lv, np.arange(1, lv + 1) / lv), -1)
  tef = np.broadcast_to(tef, (b, lv, 2))
  vm, qm = np.ones((b, lv), np.float32), np.ones((b, lt), np.float32)
  vm[1, 7:] = 0
  rest = (vm, r.randn(b, lt, DT).astype(np.float32), qm,
          r.rand(b, 5, 2).astype(np.float32), np.array([3, 700], np.int32))
  clip_first = np.concatenate([clip, sf, tef], -1).astype(np.float32)
  sf_first = np.concatenate([sf, clip, tef], -1).astype(np.float32)
  return clip_first, sf_first, rest


def test_release_order_weights_on_slowfast_first_dataset(converted):
  cfg, sd, params = converted
  info = {'sources': {'video_features': ['/feats/slowfast_features', '/feats/clip_features/']},
          'video_dims_per_dir': [DS, DC]}
  config = ml_collections.ConfigDict({'video_sources': RELEASE, 'video_dim': DV,
                                      'data': {'dir': 'data/x'}})
  logs = []
  permuted = vs.align_to_dataset(config, {'params': params}, info, log=logs.append)
  assert 'permuted' in logs[0] and 'slowfast_features' in logs[0]
  clip_first, sf_first, rest = _inputs()
  model = MomentDiff(cfg, DV, DT)
  ref = model.apply({'params': params}, clip_first, *rest)
  out = model.apply(permuted, sf_first, *rest)
  for k in ('pred_logits', 'pred_spans', 'saliency'):
    assert np.abs(np.asarray(out[k]) - np.asarray(ref[k])).max() <= 1e-5, k
  # Replicas stacked on a leading axis (evaluate.py --replica=all) get the same rows.
  stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), {'params': params})
  got = vs.align_to_dataset(config, stacked, info, log=logs.append, stacked=True)
  for r in range(2):
    jax.tree.map(lambda g, w, r=r: np.testing.assert_array_equal(
        np.asarray(g[r]), (r + 1) * np.asarray(w)), got, permuted)
  # Without the permutation the SlowFast-first input gives another network's outputs.
  wrong = model.apply({'params': params}, sf_first, *rest)
  assert np.abs(np.asarray(wrong['saliency']) - np.asarray(ref['saliency'])).max() > 1e-2
  # The first block against torch with the release's own tensors, on CLIP-first input.
  import torch  # pylint: disable=import-outside-toplevel
  x = torch.from_numpy(clip_first)
  ln = torch.nn.functional.layer_norm(
      x, (DV,), torch.from_numpy(sd['input_vid_proj.0.LayerNorm.weight']),
      torch.from_numpy(sd['input_vid_proj.0.LayerNorm.bias']), eps=1e-5)
  y = ln @ torch.from_numpy(sd['input_vid_proj.0.net.1.weight']).T + torch.from_numpy(
      sd['input_vid_proj.0.net.1.bias'])
  block = jax.tree.map(np.asarray, permuted['params'][vs.FIRST_VIDEO_BLOCK])
  z = sf_first - sf_first.mean(-1, keepdims=True)
  z = z / np.sqrt((z ** 2).mean(-1, keepdims=True) + 1e-5)
  z = z * block['LayerNorm']['scale'] + block['LayerNorm']['bias']
  ours = z @ block['net_1']['kernel'] + block['net_1']['bias']
  assert np.abs(ours - y.numpy()).max() <= 1e-5


def test_unmatched_sources_name_both_lists():
  with pytest.raises(vs.SourceMismatch, match=r"\['clip_features', 'slowfast_features'\].*"
                     r"\['clip_features', 'i3d_features'\]"):
    vs.input_permutation(RELEASE, ['clip_features', 'i3d_features'], [DC, DS], DV)
  with pytest.raises(vs.SourceMismatch, match='add up to'):
    vs.input_permutation(RELEASE, RELEASE[::-1], [DS, DC + 5], DV)
  assert vs.input_permutation(RELEASE, RELEASE, [DC, DS], DV) is None
  assert vs.input_permutation(['rgb_features'], ['vgg'], [4096], 4098) is None
  assert vs.input_permutation(None, RELEASE, [DC, DS], DV) is None
  np.testing.assert_array_equal(vs.input_permutation(RELEASE, RELEASE[::-1], [DS, DC], DV),
                                list(range(6, 10)) + list(range(6)) + [10, 11])


def test_predictor_takes_sources_by_name(converted):
  from momentdiff_jax.inference.predictor import Predictor
  cfg, _, params = converted
  config = base_config()
  config.model = cfg
  config.model.hidden_dim = D
  config.video_dim, config.text_dim, config.video_sources = DV, DT, RELEASE
  config.data.length_buckets, config.data.max_q_l = (16,), 8
  config.data.clip_len = 1.0
  config.diffusion.sampling_steps = 2
  r = np.random.RandomState(1)
  clip, sf, q = r.randn(11, DC), r.randn(11, DS), r.randn(4, DT)
  p = Predictor(config, {'params': params}, seed=0)
  assert p.video_sources == RELEASE
  by_list = p.predict([clip, sf], q, duration=11.0)
  p._calls = 0      # same sampling noise for the second call
  by_name = p.predict({'slowfast_features': sf, 'clip_features': clip}, q, duration=11.0)
  assert by_name == by_list
  with pytest.raises(ValueError, match=r"expect \['clip_features', 'slowfast_features'\]"):
    p.predict({'slowfast_features': sf, 'i3d': clip}, q, duration=11.0)


def test_fine_tuning_init_from_a_converted_workdir(converted, tmp_path):
  """`config.init_from`: a CLIP-first workdir starts a run on a SlowFast-first dataset."""
  from momentdiff_jax.run import checkpointing
  from momentdiff_jax.run import workdir as workdir_lib
  cfg, _, params = converted
  config = base_config()
  config.model = cfg
  config.video_dim, config.text_dim, config.video_sources = DV, DT, RELEASE
  checkpointing.save_converted(str(tmp_path / 'src'), config, {'params': params})
  info = {'sources': {'video_features': ['slowfast_features', 'clip_features']},
          'video_dims_per_dir': [DS, DC]}
  fresh = {'params': jax.tree.map(np.zeros_like, params)}
  got = workdir_lib.init_from(str(tmp_path / 'src'), config, info, fresh, log=lambda m: None)
  want = vs.permute_first_video_block({'params': params},
                                      vs.input_permutation(RELEASE, RELEASE[::-1], [DS, DC], DV))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
  other = base_config().model
  other.hidden_dim, other.num_heads, other.ffn_dim = 2 * D, H, FFN
  shapes = abstract_params(other, DV, DT)
  with pytest.raises(ValueError, match='do not fit'):
    workdir_lib.init_from(str(tmp_path / 'src'), config, info,
                          {'params': jax.tree.map(lambda s: np.zeros(s.shape), shapes)},
                          log=lambda m: None)
