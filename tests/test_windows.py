"""Sliding windows for long videos: the pure window functions against brute force, the
border join, and Predictor / evaluation end to end with an oracle sampler."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.data.examples import append_tef
from momentdiff_jax.inference import postprocess
from momentdiff_jax.inference import windows as wl

S = wl.Settings(enabled=True, size=64, overlap=0.25, nms_threshold=0.5, join_score=0.3)


def _cw(se, start, size):
  """[start_s, end_s] in the video (clip_len 1) -> normalized (center, width) in the
  window starting at clip `start`."""
  s, e = (np.asarray(se, np.float64) - start) / size
  return [(s + e) / 2, e - s]


# --------------------------------------------------------------- pure functions


def test_window_starts_cover_every_clip_with_the_stride():
  for n, size, ov in itertools.product((1, 5, 64, 65, 100, 111, 600), (16, 64), (0, 0.25, 0.5, 0.9)):
    st = wl.window_starts(n, size, ov)
    if n <= size:
      assert st.tolist() == [0]
      continue
    stride = max(1, round(size * (1 - ov)))
    cover = np.zeros(n, int)
    for s in st:               # brute force: count the windows over each clip
      assert 0 <= s <= n - size
      cover[s:s + size] += 1
    assert cover.min() >= 1, (n, size, ov)
    assert st[0] == 0 and st[-1] == n - size
    assert (np.diff(st)[:-1] == stride).all() and 0 < np.diff(st)[-1] <= stride
  assert wl.window_starts(600, 64, 0.25).tolist() == list(range(0, 529, 48)) + [536]


def test_cut_windows_gives_each_window_the_tef_of_a_short_video():
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(150, 6)).astype(np.float32)
  starts = wl.window_starts(150, 64, 0.25)
  got = wl.cut_windows(append_tef(raw), starts, 64, tef=True)
  want = np.stack([append_tef(raw[s:s + 64]) for s in starts])
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(wl.cut_windows(raw, starts, 64, tef=False),
                                np.stack([raw[s:s + 64] for s in starts]))


def test_spans_to_seconds_and_saliency_merge_against_loops():
  rng = np.random.default_rng(1)
  starts, size, clip_len = np.array([0, 48, 96, 111]), 64, 2.0
  spans = rng.uniform(0, 1, size=(4, 5, 2))
  got = wl.spans_to_seconds(spans, starts, size, clip_len)
  for w, k in itertools.product(range(4), range(5)):
    c, width = spans[w, k]
    lo, hi = max(0.0, c - width / 2), min(1.0, c + width / 2)
    np.testing.assert_allclose(got[w, k], [starts[w] * clip_len + lo * size * clip_len,
                                           starts[w] * clip_len + hi * size * clip_len])
  sal = rng.normal(size=(4, size))
  merged = wl.merge_saliency(sal, starts, 175)
  for i in range(175):
    vals = [sal[w, i - s] for w, s in enumerate(starts) if s <= i < s + size]
    assert merged[i] == pytest.approx(np.mean(vals))


def test_merge_without_joins_is_seconds_ranked_then_nms():
  """join_score > 1: no joins; the result is every candidate in seconds, clipped to the
  duration, best first, through greedy NMS (written out here with plain loops)."""
  rng = np.random.default_rng(2)
  starts, size = wl.window_starts(200, 64, 0.25), 64
  spans = rng.uniform(0.05, 0.6, size=(len(starts), 5, 2))
  scores = rng.uniform(0, 1, size=(len(starts), 5))
  s = wl.Settings(True, size, 0.25, nms_threshold=0.4, join_score=2.0)
  got = wl.merge_windows(spans, scores, starts, size, 1.0, 190.0, 10, s)
  cands = []
  for w, k in itertools.product(range(len(starts)), range(5)):
    c, width = spans[w, k]
    a = starts[w] + max(0, c - width / 2) * size
    b = starts[w] + min(1, c + width / 2) * size
    cands.append((scores[w, k], min(a, 190.0), min(b, 190.0)))
  cands.sort(key=lambda x: -x[0])
  kept = []
  for p, a, b in cands:
    if all(max(0, min(b, kb) - max(a, ka)) / (max(b, kb) - min(a, ka)) <= 0.4
           for _, ka, kb in kept):
      kept.append((p, a, b))
  np.testing.assert_allclose(np.array(got), [[a, b, p] for p, a, b in kept[:10]], atol=1e-4)


def _video_spans(moments, starts, size, n_spans=5):
  """Per-window outputs for moments [(start_s, end_s, score, window)], padded with
  low-scoring junk spans."""
  spans = np.tile([0.5, 0.1], (len(starts), n_spans, 1))
  scores = np.full((len(starts), n_spans), 0.01)
  fill = [0] * len(starts)
  for a, b, p, w in moments:
    spans[w, fill[w]] = _cw([a, b], starts[w], size)
    scores[w, fill[w]] = p
    fill[w] += 1
  return spans, scores


def test_a_moment_crossing_a_border_comes_back_as_one_window():
  starts = np.array([0, 48, 96])        # windows [0, 64), [48, 112), [96, 160)
  # [40, 70) crosses 64: window 0 sees [40, 64), window 1 sees [48, 70).
  spans, scores = _video_spans([(40, 64, 0.9, 0), (48, 70, 0.8, 1), (120, 130, 0.5, 2)],
                               starts, 64)
  wins = wl.merge_windows(spans, scores, starts, 64, 1.0, 160.0, 10, S, round_to=1.0)
  assert wins[0] == [40.0, 70.0, 0.9]
  assert wins[1] == [120.0, 130.0, 0.5]
  # Without the join (nor NMS) both halves come back, each a partial moment.
  no_join = wl.Settings(True, 64, 0.25, -1.0, join_score=2.0)
  wins = wl.merge_windows(spans, scores, starts, 64, 1.0, 160.0, 10, no_join, round_to=1.0)
  assert [w[:2] for w in wins[:2]] == [[40.0, 64.0], [48.0, 70.0]]


def test_join_rules():
  starts = np.array([0, 48, 96])
  run = lambda moments, s=S: wl.merge_windows(*_video_spans(moments, starts, 64), starts,
                                               64, 1.0, 160.0, 10, s)[0]
  # A moment longer than a window: chained over three windows.
  assert run([(30, 64, 0.9, 0), (48, 112, 0.7, 1), (96, 140, 0.8, 2)]) == [30.0, 140.0, 0.9]
  # One half scores under window_join_score: not joined.
  assert run([(40, 64, 0.9, 0), (48, 70, 0.2, 1)]) == [40.0, 64.0, 0.9]
  # Disjoint halves at the two borders (window 0 ends at 64, window 1 starts at 48) do
  # not touch: [56, 64) and [48, 52) are kept apart.
  assert run([(56, 64, 0.9, 0), (48, 52, 0.8, 1)]) == [56.0, 64.0, 0.9]
  # Window 0's cut view [58, 64) and window 1's whole view [58, 70) of the same moment:
  # one window, the whole extent.
  assert run([(58, 64, 0.9, 0), (58, 70, 0.6, 1)]) == [58.0, 70.0, 0.9]
  # A moment inside the shared region, seen whole by both windows: no border involved,
  # NMS keeps one.
  wins = wl.merge_windows(*_video_spans([(52, 58, 0.9, 0), (52, 58, 0.7, 1)], starts, 64),
                          starts, 64, 1.0, 160.0, 10, S)
  assert wins[0] == [52.0, 58.0, 0.9] and all(w[:2] != [52.0, 58.0] for w in wins[1:])


def test_span_saliency_against_loops():
  rng = np.random.default_rng(6)
  sal = rng.normal(size=40)
  a = rng.uniform(0, 78, 50)
  se = np.stack([a, np.minimum(a + rng.uniform(0, 12, 50), 80)], 1)
  se[:5, 1] = se[:5, 0]                      # empty spans: the clip they sit in
  got = wl.span_saliency(se, sal, 2.0)
  for (lo, hi), g in zip(se, got):
    clips = [i for i in range(40) if min(hi, 2 * i + 2) - max(lo, 2 * i) > 1e-9]
    clips = clips or [min(int(lo // 2), 39)]
    assert g == pytest.approx(np.mean(sal[clips]))


def test_saliency_scoring_ranks_windows_by_their_saliency():
  """Two windows each claim a moment; the model's probability prefers the wrong one,
  the saliency of the clips decides ('saliency'), or not ('model')."""
  starts = np.array([0, 48, 96])
  spans, scores = _video_spans([(10, 20, 0.8, 0), (120, 130, 0.7, 2)], starts, 64)
  sal = np.full(160, -3.0)
  sal[120:130] = 3.0
  got = wl.merge_windows(spans, scores, starts, 64, 1.0, 160.0, 10, S, 1.0, sal)
  assert got[0] == [120.0, 130.0, round(0.7 / (1 + np.exp(-3.0)), 4)]
  assert got[1] == [10.0, 20.0, round(0.8 / (1 + np.exp(3.0)), 4)]
  model = wl.Settings(True, 64, 0.25, 0.5, 0.3, 'model')
  got = wl.merge_windows(spans, scores, starts, 64, 1.0, 160.0, 10, model, 1.0, sal)
  assert [w[:2] for w in got[:2]] == [[10.0, 20.0], [120.0, 130.0]]


def test_settings_defaults_and_bad_overlap():
  c = base_config()
  assert wl.settings(c) == wl.Settings(True, c.data.max_v_l, 0.25, 0.5, 0.3, 'saliency')
  del c['inference']       # a config.json written before the block existed
  assert wl.settings(c).enabled and wl.with_defaults(c).inference.window_overlap == 0.25
  c.inference.window_overlap = 1.0
  with pytest.raises(ValueError, match='window_overlap'):
    wl.settings(c)
  c.inference.window_overlap, c.inference.window_score = 0.25, 'max'
  with pytest.raises(ValueError, match='window_score'):
    wl.settings(c)
  c.inference.window_score = 'saliency'
  c.inference.window_overlap, c.data.max_v_l = 0.25, -1
  assert not wl.uses_windows(c, 10_000)


# --------------------------------------------------------------- end to end


D, DT, SIZE = 6, 4, 32
# The oracle's moment: probability 0.9, saliency 1 on its clips ('saliency' scoring).
HIT = round(0.9 / (1 + np.exp(-1.0)), 4)


def _config():
  c = base_config()
  c.model.hidden_dim, c.model.num_heads, c.model.ffn_dim = 16, 2, 32
  c.model.enc_layers = c.model.dec_layers = c.model.t2v_layers = 1
  c.data.max_v_l, c.data.length_buckets, c.data.max_q_l = SIZE, (16, SIZE), 6
  c.data.clip_len = 1.0
  c.video_dim, c.text_dim = D + 2, DT
  c.diffusion.sampling_steps = 2
  c.max_pred_windows = 5
  return c


@jax.jit
def oracle(params, vf, vm, qf, qm, rng):
  """A sampler that knows the answer: clips whose feature 0 is 1 are the moment; its
  span is read from the TEF columns (so it is right only with per-window TEF)."""
  del params, qf, qm, rng
  marked = (vf[..., 0] > 0.5) & (vm > 0)
  hit = marked.any(-1)
  st = jnp.min(jnp.where(marked, vf[..., -2], 9.0), -1)
  en = jnp.max(jnp.where(marked, vf[..., -1], -9.0), -1)
  b = vf.shape[0]
  junk = jnp.broadcast_to(jnp.array([0.5, 0.1]), (b, 4, 2))
  span = jnp.where(hit[:, None], jnp.stack([(st + en) / 2, en - st], -1), 0.5)
  return {'spans': jnp.concatenate([span[:, None], junk], 1),
          'scores': jnp.concatenate([jnp.where(hit, 0.9, 0.05)[:, None],
                                     jnp.full((b, 4), 0.01)], 1),
          'saliency': vf[..., 0] * vm}


def _video(n, moment):
  v = np.zeros((n, D), np.float32)
  v[:, 1] = 1.0
  v[moment[0]:moment[1]] = np.eye(D, dtype=np.float32)[0]
  return v


def test_predictor_finds_a_late_moment_and_joins_one_across_a_border():
  from momentdiff_jax.inference.predictor import Predictor
  p = Predictor(_config(), params=None)
  p._sample = oracle
  q = np.ones((3, DT), np.float32)
  # 200 clips: windows start at 0, 24, 48, ..., 168; the moment is in the last ones.
  out = p.predict(_video(200, (171, 180)), q, duration=200.0)
  assert out['pred_relevant_windows'][0] == [171.0, 180.0, HIT]
  sal = np.asarray(out['pred_saliency_scores'])
  assert len(sal) == 200 and sal[171:180].min() == 1.0 and np.delete(sal, range(171, 180)).max() == 0.0
  # [20, 40) crosses the border at 32 (window 0 is [0, 32), window 1 [24, 56)).
  out = p.predict(_video(100, (20, 40)), q, duration=99.5)
  assert out['pred_relevant_windows'][0] == [20.0, 40.0, HIT]
  # Off: the whole video padded to one bucket; the TEF of 100 clips is not the
  # windows' and the oracle's span is read in the whole video's coordinates.
  p.config.inference.sliding_windows = False
  try:
    out = p.predict(_video(200, (171, 180)), q, duration=200.0)
    assert out['pred_relevant_windows'][0][:2] == [171.0, 180.0]
  finally:
    p.config.inference.sliding_windows = True


def test_short_video_output_is_unchanged():
  """n <= max_v_l: today's computation (one padded row, windows_from_spans), written
  out here, gives the same output bit for bit. A long video with a list of queries
  gives what one call per query gives (each window row drawn with its query's key)."""
  from momentdiff_jax.inference.predictor import Predictor
  from momentdiff_jax.run import workdir as workdir_lib
  c = _config()
  model = workdir_lib.create_model(c, c.video_dim, c.text_dim)
  # Random parameters of the model's shapes (tracing init costs no compile).
  shapes = jax.eval_shape(lambda k: workdir_lib.init_params(model, c, k, c.video_dim,
                                                            c.text_dim), jax.random.PRNGKey(0))
  rng = np.random.default_rng(4)
  params = jax.tree.map(lambda x: (0.3 * rng.normal(size=x.shape)).astype(x.dtype), shapes)
  q = rng.normal(size=(5, DT)).astype(np.float32)
  p = Predictor(c, params, seed=3)
  for n in (20, SIZE):      # both in the bucket of 32 clips: one program
    v = rng.normal(size=(n, D)).astype(np.float32)
    p._calls = 0
    got = p.predict(v, q, duration=n * 1.0)
    video = append_tef(v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-5))
    lv = SIZE
    vf = np.zeros((1, lv, D + 2), np.float32)
    vf[0, :n] = video
    vm = (np.arange(lv) < n)[None].astype(np.float32)
    qn = q / (np.linalg.norm(q, axis=-1, keepdims=True) + 1e-5)
    qf = np.zeros((1, 6, DT), np.float32)
    qf[0, :5] = qn
    qm = (np.arange(6) < 5)[None].astype(np.float32)
    out = jax.device_get(p._sample(p.params, vf, vm, qf, qm,
                                   jax.random.fold_in(jax.random.PRNGKey(3), 0)[None]))
    want = postprocess.windows_from_spans(out['spans'], out['scores'], np.array([n * 1.0]),
                                          np.array([n * 1.0]), 5, -1.0, 1.0)[0]
    assert got['pred_relevant_windows'] == want
    assert got['pred_saliency_scores'] == np.asarray(out['saliency'][0, :n]).round(4).tolist()
  v = rng.normal(size=(SIZE + 8, D)).astype(np.float32)     # 2 windows
  q2 = rng.normal(size=(3, DT)).astype(np.float32)
  p._calls = 0
  both = p.predict(v, [q, q2], duration=SIZE + 8.0)
  p._calls = 0
  one = p.predict(v, q, duration=SIZE + 8.0)
  assert both[0] == one and p._calls == 1
  assert both[1] == p.predict(v, q2, duration=SIZE + 8.0)
  assert both[0] != both[1] and len(one['pred_saliency_scores']) == SIZE + 8


def _write_store(path, videos):
  """A dataset of (num_clips, moment) videos, one query each, clip_len 1 s."""
  from momentdiff_jax.data import store
  rng = np.random.default_rng(5)
  with store.DatasetWriter(str(path)) as w:
    for split in ('train', 'test'):
      for i, (n, m) in enumerate(videos):
        w.add(split, {'video': _video(n, m), 'query': rng.normal(size=(3, DT)),
                      'windows': np.array([m], np.float32), 'duration': float(n),
                      'time_scale': float(n),
                      'row': {'qid': i, 'vid': f'v{i}', 'query': 'q', 'duration': float(n),
                              'relevant_windows': [list(map(float, m))]}})
    return w.commit({'clip_len': 1.0, 'pool_clips': 0, 'normalize_video': True})


def test_evaluation_predicts_long_videos_through_windows(tmp_path):
  from momentdiff_jax import evaluation
  from momentdiff_jax.data import dataset as dataset_lib
  from momentdiff_jax.run import mesh as mesh_lib
  videos = [(20, (3, 9)), (200, (171, 180)), (30, (25, 30)), (100, (20, 40)),
            (33, (31, 33)), (150, (60, 70))]
  c = _config()
  c.data.dir = _write_store(tmp_path / 'data', videos)
  c.eval_batch_size = 4
  ds = dataset_lib.open_dataset(c)
  # The sampler of R replicas: the oracle vmapped over a leading axis (R = 1 here).
  reps = lambda prm, vf, vm, qf, qm, rngs: jax.vmap(
      lambda r: oracle(prm, vf, vm, qf, qm, r))(rngs)
  run = lambda: evaluation.predict_split(reps, None, c, ds, 'test', mesh_lib.make_mesh(),
                                         jax.random.PRNGKey(0)[None])[0][0]
  on = run()
  for p, (n, m) in zip(on, videos):
    want = HIT if n > SIZE else 0.9          # short videos: the model's score, as before
    assert p['pred_relevant_windows'][0] == [float(m[0]), float(m[1]), want], (n, p)
    assert len(p['pred_saliency_scores']) == n
  # Two replicas: each gets the same windows.
  both, _ = evaluation.predict_split(reps, None, c, ds, 'test', mesh_lib.make_mesh(2),
                                     jax.random.split(jax.random.PRNGKey(0), 2))
  assert both[0] == on and both[1] == on
  c.inference.sliding_windows = False
  off = run()
  for a, b, (n, _) in zip(on, off, videos):
    if n <= SIZE:
      assert a == b
    else:     # cut to the first 32 clips: the late moments are not there
      assert len(b['pred_saliency_scores']) == SIZE
  assert off[1]['pred_relevant_windows'][0][2] == 0.05


def test_evaluate_refuses_a_bad_window_setting_before_running(tmp_path):
  from momentdiff_jax import evaluation
  from momentdiff_jax.run import workdir as workdir_lib
  c = _config()
  (tmp_path / 'config.json').write_text(c.to_json())
  with pytest.raises(workdir_lib.ConfigMismatch, match='window_overlap must be in'):
    evaluation.evaluate_workdir(str(tmp_path), overrides={'inference.window_overlap': '1.5'})
