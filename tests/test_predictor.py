"""Predictor: many queries on one video (decoded once, one batch) give what the same
queries one call each give; one query keeps today's output."""
import functools

import jax
import numpy as np
import pytest

from momentdiff_jax import Predictor  # pylint: disable=g-import-not-at-top
from tests import demo_fixtures  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp('predictor')
  w = demo_fixtures.clip_workdir(root)
  w['video'] = demo_fixtures.write_h264(root / 'v.mp4')
  return w


def _same(a, b):
  """Equal outputs: windows and saliency to float rounding of the batched program."""
  assert set(a) == set(b)
  for k in a:
    if k in ('pred_relevant_windows', 'pred_saliency_scores'):
      np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=2e-4)
    else:
      assert a[k] == b[k], k


def test_list_of_queries_equals_one_call_each(world, monkeypatch):
  from momentdiff_jax.features import video as video_lib
  decodes = []
  real_decode = video_lib.decode
  monkeypatch.setattr(video_lib, 'decode', lambda p: decodes.append(p) or real_decode(p))
  queries = demo_fixtures.QUERIES[:3]
  p = Predictor.from_workdir(world['workdir'], clip_weights=world['clip'])
  many = p.predict_video(world['video'], queries)
  assert len(decodes) == 1                    # decoded (and encoded) once for 3 queries
  one = Predictor.from_workdir(world['workdir'], clip_weights=world['clip'])
  singles = [one.predict_video(world['video'], q) for q in queries]
  assert len(decodes) == 4
  assert isinstance(many, list) and len(many) == 3
  for m, s, q in zip(many, singles, queries):
    assert m['query'] == q and m['video'] == world['video']
    _same(m, s)
  # Different queries (and keys) give different answers: the comparison can fail.
  assert many[0]['pred_saliency_scores'] != many[2]['pred_saliency_scores']
  # A single string keeps the dict of today (CONTRACT keys).
  assert set(singles[0]) == {'video', 'query', 'duration', 'pred_relevant_windows',
                             'pred_saliency_scores'}
  assert singles[0]['duration'] == pytest.approx(12.0, abs=0.05)
  assert len(singles[0]['pred_saliency_scores']) == 6      # 12 s / 2 s clips

  # encode once, query later: the same as predict_video, no new decode.
  again = Predictor.from_workdir(world['workdir'], clip_weights=world['clip'])
  feats = again.encode_video(world['video'])
  assert len(decodes) == 5 and feats.num_clips == 6
  first = again.predict_features(feats, queries[0])
  rest = again.predict_features(feats, queries[1:])
  assert len(decodes) == 5
  for m, s in zip(many, [first] + rest):
    _same(m, s)


def test_one_query_is_todays_sampler(world):
  """predict() on one query == the batch sampler of before (one key for the batch)."""
  from momentdiff_jax.inference import postprocess, sampling
  from momentdiff_jax.ops import diffusion
  p = Predictor.from_workdir(world['workdir'], clip_weights=world['clip'])
  rng = np.random.default_rng(0)
  video = rng.normal(size=(5, p.feature_dim)).astype(np.float32)
  query = rng.normal(size=(7, p.config.text_dim)).astype(np.float32)
  out = p.predict(video, query, duration=10.0)
  # Today's path, written out: one (1, ...) batch, key fold_in(PRNGKey(0), 0).
  old = jax.jit(functools.partial(sampling.sample_one, p.model, p.config, diffusion.make_schedule(
      p.config.diffusion), p.sampling_steps))
  lv, lt = p.padded_length(5), p.config.data.max_q_l
  v = p._video(video)                      # pylint: disable=protected-access
  vf = np.zeros((1, lv, v.shape[1]), np.float32)
  vf[0, :5] = v
  vm = (np.arange(lv) < 5)[None].astype(np.float32)
  q = p._query(query)                      # pylint: disable=protected-access
  qf = np.zeros((1, lt, q.shape[1]), np.float32)
  qf[0, :7] = q
  qm = (np.arange(lt) < 7)[None].astype(np.float32)
  ref = jax.device_get(old(p.params, vf, vm, qf, qm,
                           jax.random.fold_in(jax.random.PRNGKey(0), 0)))
  wins = postprocess.windows_from_spans(
      ref['spans'], ref['scores'], np.asarray([5 * 2.0]), np.asarray([10.0]),
      p.config.max_pred_windows, p.config.nms_threshold,
      postprocess.round_unit(p.config, 2.0))[0]
  np.testing.assert_allclose(out['pred_relevant_windows'], wins, atol=2e-4)
  np.testing.assert_allclose(out['pred_saliency_scores'], ref['saliency'][0, :5], atol=1e-4)
  # The next call takes the next key: a list of two queries == two calls.
  two = p.predict(video, [query, query[:3]], duration=10.0)
  p2 = Predictor.from_workdir(world['workdir'], clip_weights=world['clip'])
  p2.predict(video, query, duration=10.0)
  for a, q in zip(two, [query, query[:3]]):
    _same(a, p2.predict(video, q, duration=10.0))


def test_bad_queries_refused_before_decoding(world, monkeypatch):
  from momentdiff_jax.features import video as video_lib
  monkeypatch.setattr(video_lib, 'decode', lambda p: pytest.fail('decoded'))
  p = Predictor.from_workdir(world['workdir'], clip_weights=world['clip'])
  for bad in ('', '  ', [], ['ok', '']):
    with pytest.raises(ValueError, match='query'):
      p.predict_video(world['video'], bad)
