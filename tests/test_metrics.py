"""Tests of momentdiff_jax.ops.metrics: SPEC's reference numbers, hand-computed cases, and
agreement with a slow per-query implementation written here from the definitions."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from momentdiff_jax.ops import metrics

REPO = pathlib.Path(os.path.abspath(__file__)).parents[1]
FIXTURES = REPO / 'tests' / 'fixtures'
# The standalone eval's QVHighlights val sample, every query, windows only (fixtures).
SAMPLE_PREDS = FIXTURES / 'eval_sample' / 'sample_val_preds_windows.jsonl'
SAMPLE_GT = FIXTURES / 'annotations' / 'highlight' / 'highlight_val_release_windows.jsonl'
# Whole rows (saliency too) of its first 100 queries.
HEAD_PREDS = FIXTURES / 'eval_sample' / 'sample_val_preds_head100.jsonl'
HEAD_GT = FIXTURES / 'annotations' / 'highlight' / 'highlight_val_release.jsonl'
# The full files under ../shared (a development checkout): an extra layer.
SHARED = REPO.parent / 'shared' / 'data'
FULL_PREDS = SHARED / 'eval_sample' / 'qvhighlights_val_sample_preds.jsonl'
FULL_GT = SHARED / 'annotations' / 'highlight' / 'highlight_val_release.jsonl'
SPEC_NUMBERS = {
    'MR-full-R1@0.1': 78.45, 'MR-full-R1@0.3': 67.48, 'MR-full-R1@0.5': 53.94,
    'MR-full-R1@0.7': 34.84, 'MR-full-mAP': 32.2, 'MR-full-mAP@0.5': 54.96,
    'MR-full-mAP@0.75': 31.01, 'MR-short-mAP': 3.28, 'MR-middle-mAP': 32.3,
    'MR-long-mAP': 41.11}
# The release's standalone_eval (eval_submission's brief, eval_highlight) on the first
# 100 queries of the sample (HEAD_PREDS, GT rows of the same qids); run once with the
# release's own code, which needs scikit-learn, so its figures are written here.
RELEASE_ON_HEAD = {
    'MR-full-R1@0.1': 74.0, 'MR-full-R1@0.3': 62.0, 'MR-full-R1@0.5': 42.0,
    'MR-full-R1@0.7': 34.0, 'MR-full-mAP': 29.15, 'MR-full-mAP@0.5': 46.46,
    'MR-full-mAP@0.75': 29.65, 'MR-long-mAP': 44.22, 'MR-middle-mAP': 26.71,
    'MR-short-mAP': 0.87}
RELEASE_HL_ON_HEAD = {
    'HL-min-Fair': {'HL-mAP': 66.46, 'HL-Hit1': 64.0},
    'HL-min-Good': {'HL-mAP': 55.69, 'HL-Hit1': 59.0},
    'HL-min-VeryGood': {'HL-mAP': 33.51, 'HL-Hit1': 54.0}}


# --- SPEC acceptance ------------------------------------------------------------

def test_spec_numbers_on_qvhighlights_sample():
  result = metrics.evaluate_files(str(SAMPLE_PREDS), str(SAMPLE_GT), 'qvhighlights')
  brief = result['brief']
  assert len(metrics.load_jsonl(str(SAMPLE_PREDS))) == 1550     # the whole sample
  for key, value in SPEC_NUMBERS.items():
    assert brief[key] == pytest.approx(value, abs=1e-9), key
  assert list(result)[0] == 'brief'
  assert sorted(brief) == sorted(SPEC_NUMBERS)    # no saliency in this cut: no HL keys


def test_release_numbers_with_highlights_on_sample_head():
  preds = metrics.load_jsonl(str(HEAD_PREDS))
  qids = {p['qid'] for p in preds}
  gt = [g for g in metrics.load_jsonl(str(HEAD_GT)) if g['qid'] in qids]
  assert len(preds) == len(gt) == 100
  result = metrics.compute_metrics(preds, gt, 'qvhighlights')
  for key, value in RELEASE_ON_HEAD.items():
    assert result['brief'][key] == pytest.approx(value, abs=1e-9), key
  for name, values in RELEASE_HL_ON_HEAD.items():
    assert dict(result[name]) == values, name
  assert result['brief']['HL-min-VeryGood-mAP'] == 33.51
  assert result['brief']['HL-min-VeryGood-Hit1'] == 54.0


@pytest.mark.skipif(not (FULL_PREDS.exists() and FULL_GT.exists()),
                    reason='full QVHighlights sample and val annotations (../shared/data) '
                    'absent; the cut under tests/fixtures is checked above')
def test_spec_numbers_on_the_full_shared_files():
  """The uncut files (saliency scores too) give the same figures as the cut."""
  brief = metrics.evaluate_files(str(FULL_PREDS), str(FULL_GT), 'qvhighlights')['brief']
  for key, value in SPEC_NUMBERS.items():
    assert brief[key] == pytest.approx(value, abs=1e-9), key
  assert 'HL-min-VeryGood-mAP' in brief and 'HL-min-VeryGood-Hit1' in brief


def test_evaluate_cli_prints_and_writes(tmp_path):
  out = tmp_path / 'm.json'
  proc = subprocess.run(
      [sys.executable, 'evaluate.py', f'--predictions={SAMPLE_PREDS}',
       f'--ground_truth={SAMPLE_GT}', '--dataset=qvhighlights', f'--output={out}'],
      cwd=REPO, capture_output=True, text=True, check=True)
  printed = json.loads(proc.stdout)
  assert printed == json.loads(out.read_text())
  assert printed['brief']['MR-full-mAP'] == 32.2


# --- hand-computed cases ---------------------------------------------------------

def _gt(qid, windows, **kw):
  return dict(qid=qid, relevant_windows=windows, **kw)


def _pred(qid, windows, **kw):
  return dict(qid=qid, pred_relevant_windows=windows, **kw)


def test_perfect_prediction_scores_100():
  # Each query's windows lie in one length bin: a query whose windows span bins
  # meets its other-bin windows there as false positives (the standard filtering).
  gts = [_gt(0, [[0, 10], [20, 24]]), _gt(1, [[5, 50]]), _gt(2, [[100, 120]]),
         _gt(3, [[20, 40], [60, 80]])]
  preds = [_pred(g['qid'], [w + [1.0 - 0.1 * i] for i, w in
                            enumerate(g['relevant_windows'])]) for g in gts]
  brief = metrics.compute_metrics(preds, gts, 'qvhighlights')['brief']
  assert set(brief.values()) == {100.0}
  assert len(brief) == 10


def test_known_ap_by_hand():
  # Ranked: TP, FP, TP over 2 GT windows -> precision 1, 1/2, 2/3 at recall
  # 1/2, 1/2, 1 -> interpolated AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
  gts = [_gt(0, [[0, 10], [20, 30]])]
  preds = [_pred(0, [[20, 30, 0.7], [0, 10, 0.9], [40, 50, 0.8]])]
  result = metrics.compute_metrics(preds, gts, 'qvhighlights')
  assert result['full']['MR-mAP']['average'] == 83.33
  assert result['full']['MR-mAP']['0.95'] == 83.33
  # R1 takes the first window of the list (20-30), not the best-scored one.
  assert result['brief']['MR-full-R1@0.7'] == 100.0


def test_r1_uses_list_order_and_map_uses_scores():
  gts = [_gt(0, [[0, 10]])]
  preds = [_pred(0, [[40, 50, 0.1], [0, 10, 0.9]])]
  brief = metrics.compute_metrics(preds, gts)['brief']
  assert brief['MR-full-R1@0.1'] == 0.0
  assert brief['MR-full-mAP'] == 100.0


def test_duplicate_match_is_false_positive_and_top10_cut():
  gts = [_gt(0, [[0, 10], [30, 40]])]
  # The duplicate of 0-10 cannot take the same GT: TP, FP, TP -> 5/6 as above.
  preds = [_pred(0, [[0, 10, 0.9], [0, 10, 0.8], [30, 40, 0.7]])]
  assert metrics.compute_metrics(preds, gts)['brief']['MR-full-mAP'] == 83.33
  # Only the first 10 windows of the list count, whatever the 11th's score.
  bad = [[60, 70, 0.5]] * 10
  preds = [_pred(0, bad + [[0, 10, 1.0], [30, 40, 1.0]])]
  assert metrics.compute_metrics(preds, gts)['brief']['MR-full-mAP'] == 0.0


@pytest.mark.parametrize('a, b, expected', [
    ([0, 5], [5, 10], 0.0),        # touching
    ([2, 4], [0, 10], 0.2),        # contained
    ([3, 3], [3, 3], 0.0),         # both empty: union 0
    ([3, 3], [0, 10], 0.0),        # zero-length inside
    ([0, 10], [0, 10], 1.0),
    ([0, 10], [20, 30], 0.0),
    ([0, 10], [0, 5], 0.5),
    ([0, 10], [5, 15], 1 / 3),
])
def test_temporal_iou_edge_cases(a, b, expected):
  assert metrics.temporal_iou(np.array(a), np.array(b)) == pytest.approx(expected)
  assert metrics.temporal_iou(np.array(b), np.array(a)) == pytest.approx(expected)


def test_iou_exactly_at_threshold_counts():
  gts = [_gt(0, [[0, 5]])]
  preds = [_pred(0, [[0, 10, 1.0]])]  # IoU 0.5 exactly
  result = metrics.compute_metrics(preds, gts)
  assert result['brief']['MR-full-R1@0.5'] == 100.0
  assert result['brief']['MR-full-R1@0.7'] == 0.0
  assert result['full']['MR-mAP']['0.5'] == 100.0
  assert result['full']['MR-mAP']['0.55'] == 0.0


def test_length_bins_and_charades_brief():
  # Bins are (lo, hi]: a 10-s window is short for QVHighlights, 15-s short for Charades.
  gts = [_gt(0, [[0, 10], [20, 51]]), _gt(1, [[0, 15]]), _gt(2, [[0, 30]])]
  preds = [_pred(0, [[20, 51, 1.0]]), _pred(1, [[0, 15, 1.0]]),
           _pred(2, [[0, 30, 1.0]])]
  qvh = metrics.compute_metrics(preds, gts, 'qvhighlights')
  assert qvh['short']['num_queries'] == 1 and qvh['short']['MR-mAP']['average'] == 0
  assert qvh['middle']['num_queries'] == 2 and qvh['long']['num_queries'] == 1
  assert qvh['brief']['MR-long-mAP'] == 100.0
  # Query 0's long window is filtered out of the short bin, so its prediction misses.
  cha = metrics.compute_metrics(preds, gts, 'charades')
  assert 'MR-long-mAP' not in cha['brief'] and 'long' not in cha
  assert cha['short']['num_queries'] == 2 and cha['middle']['num_queries'] == 1
  assert cha['brief']['MR-short-mAP'] == 50.0
  tacos = metrics.compute_metrics([_pred(0, [[0, 400, 1.0]])], [_gt(0, [[0, 400]])],
                                  'tacos')
  assert tacos['long']['num_queries'] == 1
  # An empty bin reports None rather than NaN (which is not valid JSON).
  assert tacos['brief']['MR-short-mAP'] is None
  assert tacos['short']['MR-R1']['0.5'] is None


def test_missing_qid():
  gts = [_gt(0, [[0, 10]]), _gt(1, [[0, 10]])]
  preds = [_pred(0, [[0, 10, 1.0]])]
  with pytest.raises(ValueError, match='qids'):
    metrics.compute_metrics(preds, gts)
  result = metrics.compute_metrics(preds, gts, match_number=False)
  assert result['full']['num_queries'] == 1
  assert result['brief']['MR-full-mAP'] == 100.0


def _hl_gt(qid, duration, clip_ids, scores):
  return _gt(qid, [[0, 2]], duration=duration, relevant_clip_ids=clip_ids,
             saliency_scores=scores)


def test_highlight_by_hand():
  gts = [_hl_gt(0, 8, [1, 2], [[4, 4, 4], [2, 2, 2]])]  # 4 clips
  best = metrics.compute_metrics(
      [_pred(0, [[0, 2, 1.0]], pred_saliency_scores=[0.1, 0.9, 0.5, 0.2])], gts)
  assert best['HL-min-VeryGood'] == {'HL-mAP': 100.0, 'HL-Hit1': 100.0}
  assert best['HL-min-Fair'] == {'HL-mAP': 100.0, 'HL-Hit1': 100.0}
  second = metrics.compute_metrics(
      [_pred(0, [[0, 2, 1.0]], pred_saliency_scores=[0.9, 0.5, 0.1, 0.0])], gts)
  assert second['HL-min-VeryGood'] == {'HL-mAP': 50.0, 'HL-Hit1': 0.0}
  # All scores tied: one threshold, precision 1/4 at recall 1. Short prediction
  # lists are zero-padded to the clip count.
  tied = metrics.compute_metrics(
      [_pred(0, [[0, 2, 1.0]], pred_saliency_scores=[0.0])], gts)
  assert tied['brief']['HL-min-VeryGood-mAP'] == 25.0
  assert tied['brief']['HL-min-VeryGood-Hit1'] == 0.0


# --- against a slow reference on random data --------------------------------------

def _iou(a, b):
  inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
  union = (a[1] - a[0]) + (b[1] - b[0]) - inter
  return inter / union if union > 0 else 0.0


def _ref_ap(pred_windows, gt_windows, thr):
  ranked = sorted(pred_windows[:10], key=lambda w: -w[2])  # sorted() is stable
  used, hits = set(), []
  for w in ranked:
    free = [(_iou(w, g), j) for j, g in enumerate(gt_windows) if j not in used]
    free = [c for c in free if c[0] >= thr]
    if free:
      used.add(max(free)[1])  # highest IoU, then highest index
    hits.append(bool(free))
  prec, rec, tp = [], [], 0
  for k, h in enumerate(hits):
    tp += h
    prec.append(tp / (k + 1))
    rec.append(tp / len(gt_windows))
  ap, prev_r = 0.0, 0.0
  for k in range(len(hits)):
    ap += (rec[k] - prev_r) * max(prec[k:])
    prev_r = rec[k]
  return ap


def _ref_hl_ap(scores, labels):
  if len(set(labels)) == 1:
    return float(labels[0])
  points = []  # (recall, precision) at each distinct threshold
  for t in sorted(set(scores), reverse=True):
    sel = [y for s, y in zip(scores, labels) if s >= t]
    points.append((sum(sel) / sum(labels), sum(sel) / len(sel)))
  levels = sorted({r for r, _ in points if r > 0})
  return np.mean([max(p for r, p in points if r >= lv) for lv in levels])


def _reference(preds, gts, bins, clip_length=2):
  by_qid = {p['qid']: p for p in preds}
  out = {}
  for name, lo, hi in bins:
    r1, aps = [], []
    for g in gts:
      gw = [w for w in g['relevant_windows']
            if lo is None or lo < w[1] - w[0] <= hi]
      if not gw:
        continue
      pw = by_qid[g['qid']]['pred_relevant_windows']
      r1.append(max(_iou(pw[0], w) for w in gw))
      aps.append([_ref_ap(pw, gw, t) for t in metrics.MR_AP_THRESHOLDS])
    aps = np.mean(aps, 0)
    out[name] = dict(
        r1={str(t): round(100 * np.mean(np.array(r1) >= t), 2)
            for t in metrics.MR_R1_THRESHOLDS},
        ap=[round(100 * a, 2) for a in aps] + [round(100 * np.mean(aps), 2)])
  for level, min_score in metrics.HL_LEVELS:
    hits, aps = [], []
    for g in gts:
      n = int(g['duration'] / clip_length)
      gt_sc = np.zeros((n, 3))
      gt_sc[g['relevant_clip_ids']] = g['saliency_scores']
      pred = list(by_qid[g['qid']]['pred_saliency_scores'])
      top = int(np.argmax(pred))
      hits.append(max(gt_sc[top] >= min_score) if top < n else 0)
      pred = (pred + [0.0] * n)[:n]
      aps += [_ref_hl_ap(pred, list((gt_sc[:, a] >= min_score).astype(int)))
              for a in range(3)]
    out[level] = (round(100 * np.mean(aps), 2), round(100 * np.mean(hits), 2))
  return out


def _random_data(rng, num_queries):
  preds, gts = [], []
  for qid in range(num_queries):
    duration = int(rng.choice([20, 40, 150, 151]))
    n = duration // 2
    windows = []
    for _ in range(rng.integers(1, 4)):
      # 2-s grid: exact IoU ties and lengths on the bin edges happen often.
      s = int(rng.integers(0, n)) * 2
      windows.append([s, int(min(duration, s + 2 * rng.integers(1, 20)))])
    ids = sorted(rng.choice(n, size=int(rng.integers(1, min(n, 12))), replace=False))
    gts.append(dict(qid=qid, duration=duration, relevant_windows=windows,
                    relevant_clip_ids=[int(i) for i in ids],
                    saliency_scores=rng.integers(0, 5, (len(ids), 3)).tolist()))
    pw = []
    for _ in range(rng.integers(1, 14)):
      if rng.random() < 0.3:  # near-copies of GT windows give real hits
        w = list(windows[rng.integers(len(windows))])
        w[1] += 2 * int(rng.integers(-1, 2)) if w[1] - w[0] > 2 else 0
      else:
        s = int(rng.integers(0, n)) * 2
        w = [s, int(min(duration, s + 2 * rng.integers(1, 30)))]
      pw.append([float(w[0]), float(w[1]), float(np.round(rng.random(), 1))])
    sal = np.round(rng.normal(size=int(rng.integers(n - 3, n + 3))), 1).tolist()
    preds.append(dict(qid=qid, pred_relevant_windows=pw, pred_saliency_scores=sal))
  return preds, gts


@pytest.mark.parametrize('dataset, seed', [('qvhighlights', 0), ('charades', 1),
                                           ('tacos', 2)])
def test_matches_slow_reference(dataset, seed):
  preds, gts = _random_data(np.random.default_rng(seed), 300)
  bins = metrics.length_bins(dataset)
  ref = _reference(preds, gts, bins)
  got = metrics.compute_metrics(preds, gts, dataset)
  for name, _, _ in bins:
    if not got[name]['num_queries']:
      continue
    assert got[name]['MR-R1'] == ref[name]['r1'], name
    ap = got[name]['MR-mAP']
    assert [ap[str(t)] for t in metrics.MR_AP_THRESHOLDS] + [ap['average']] == \
        pytest.approx(ref[name]['ap'], abs=0.011), name
  for level, _ in metrics.HL_LEVELS:
    assert (got[f'HL-min-{level}']['HL-mAP'],
            got[f'HL-min-{level}']['HL-Hit1']) == \
        pytest.approx(ref[level], abs=0.011), level


def test_prediction_without_windows_scores_zero():
  # The standalone eval crashes (R1) or silently drops the query (mAP); here the
  # query stays in the average with IoU 0 and AP 0.
  gts = [_gt(0, [[0, 10]]), _gt(1, [[0, 10]])]
  preds = [_pred(0, [[0, 10, 1.0]]), _pred(1, [])]
  brief = metrics.compute_metrics(preds, gts)['brief']
  assert brief['MR-full-R1@0.5'] == 50.0 and brief['MR-full-mAP'] == 50.0
