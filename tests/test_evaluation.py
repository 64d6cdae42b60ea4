"""Prediction post-processing: spans -> seconds, clipping, the release's rounding."""
import os

import ml_collections
import numpy as np
import pytest

from momentdiff_jax import evaluation
from momentdiff_jax.inference import postprocess
from momentdiff_jax.ops import metrics

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')


def _cw(se):
  se = np.asarray(se, np.float64)
  return np.stack([(se[..., 0] + se[..., 1]) / 2, se[..., 1] - se[..., 0]], -1)


def test_rounding_to_clip_multiples_and_clipping_to_duration():
  dur = np.array([30.6, 12.0])
  se = np.array([[[3.4, 7.6], [-1.0, 30.55], [10.5, 11.5]],
                 [[0.26, 5.74], [2.9, 13.0], [4.0, 4.2]]]) / dur[:, None, None]
  scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.7, 0.4]])
  plain = postprocess.windows_from_spans(_cw(se), scores, dur, dur, top_k=10)
  rounded = postprocess.windows_from_spans(_cw(se), scores, dur, dur, top_k=10, round_to=1.0)
  assert [w[:2] for w in plain[0]] == [[3.4, 7.6], [0.0, 30.55], [10.5, 11.5]]
  # Clipped to [0, dur], rounded half to even (10.5 -> 10, 11.5 -> 12), clipped again:
  # 30.55 rounds to 31 > 30.6.
  assert [w[:2] for w in rounded[0]] == [[3.0, 8.0], [0.0, 30.6], [10.0, 12.0]]
  assert [w[:2] for w in rounded[1]] == [[3.0, 12.0], [4.0, 4.0], [0.0, 6.0]]
  sixth = postprocess.windows_from_spans(_cw(se), scores, dur, dur, top_k=10, round_to=1 / 6)
  got = np.array([w[:2] for w in sixth[1]])
  np.testing.assert_allclose(got, np.round(np.clip(got, 0, 12) * 6) / 6, atol=1e-4)


def test_round_unit_from_config():
  c = ml_collections.ConfigDict({'round_windows': True, 'round_seconds': 0.0})
  assert postprocess.round_unit(c, 1.0) == 1.0 and postprocess.round_unit(c, None) == 0.0
  c.round_seconds = 2.0
  assert postprocess.round_unit(c, None) == 2.0
  c.round_windows = False
  assert postprocess.round_unit(c, 1.0) == 0.0


def test_rounding_effect_on_the_shipped_sample():
  """The shipped QVHighlights predictions lie on the 2 s grid, as the GT does. Moved off
  it by up to 0.99 s, they lose R1@0.7 and mAP; rounding as the release does puts them
  back exactly, and the standalone-eval numbers (SPEC.md) return."""
  preds = metrics.load_jsonl(os.path.join(FIXTURES, 'eval_sample',
                                          'sample_val_preds_windows.jsonl'))
  gt = metrics.load_jsonl(os.path.join(FIXTURES, 'annotations', 'highlight',
                                       'highlight_val_release_windows.jsonl'))
  dur_by_qid = {r['qid']: float(r['duration']) for r in gt}
  rng = np.random.default_rng(0)
  w = np.array([p['pred_relevant_windows'] for p in preds])          # (Q, 10, 3)
  dur = np.array([dur_by_qid[p['qid']] for p in preds])
  moved = np.clip(w[..., :2] + rng.uniform(-0.99, 0.99, w[..., :2].shape), 0, None)
  spans = _cw(moved / dur[:, None, None])
  out = {}
  for unit in (0.0, 2.0):
    wins = postprocess.windows_from_spans(spans, w[..., 2], dur, dur, top_k=10, round_to=unit)
    rows = [dict(p, pred_relevant_windows=x) for p, x in zip(preds, wins)]
    out[unit] = metrics.compute_metrics(rows, gt, 'qvhighlights')['brief']
  assert out[2.0]['MR-full-R1@0.7'] == pytest.approx(34.84)
  assert out[2.0]['MR-full-mAP'] == pytest.approx(32.2)
  assert out[0.0]['MR-full-R1@0.7'] < 34.84 - 0.5 and out[0.0]['MR-full-mAP'] < 32.2 - 0.5
  print({u: (b['MR-full-R1@0.5'], b['MR-full-R1@0.7'], b['MR-full-mAP']) for u, b in out.items()})
