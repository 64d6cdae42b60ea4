"""Moment-retrieval and highlight-detection metrics.

The definitions are those of the QVHighlights standalone eval, which every paper
(MomentDiff included) reports:

* R1@t: the first predicted window (list order, as the standalone eval takes
  `pred_relevant_windows[0]`) scores its IoU with the best-matching GT window.
* mAP@t: per query, the top 10 predicted windows (list order) are ranked by score
  and greedily matched to all GT windows at IoU t (each GT matched once, the
  highest-IoU free GT first); ActivityNet/VOC interpolated AP; averaged over
  queries. `MR-*-mAP` is the mean over t in 0.5:0.05:0.95.
* Length bins: a query enters a bin when at least one of its GT windows has a
  length in (lo, hi]; only those GT windows are kept, all its predictions are.
* HL-min-{Fair,Good,VeryGood}: a clip is positive when its saliency score is >= 2/3/4;
  per annotator interpolated AP (sklearn precision_recall_curve style, ties grouped)
  over the video's 2-s clips, and HIT@1 of the top-scored clip (max over annotators).

Everything is vectorized over queries with padded numpy arrays (4k queries score in
tens of milliseconds), and numbers are reported in percent rounded to 2 decimals.

Deliberate choices where the standalone eval crashes or is silent: a prediction row
with no windows counts as IoU 0 and AP 0; GT rows with no windows are left out of
the MR metrics (they have nothing to match).
"""
import collections
import json
import math

import numpy as np

MR_AP_THRESHOLDS = tuple(round(t, 2) for t in np.linspace(0.5, 0.95, 10))
MR_R1_THRESHOLDS = tuple(round(t, 2) for t in np.linspace(0.1, 0.95, 18))
MAX_PRED_WINDOWS = 10
HL_LEVELS = (('Fair', 2), ('Good', 3), ('VeryGood', 4))

# (name, lo, hi): a GT window of length l is in the bin when lo < l <= hi; the bin
# with bounds None is the unfiltered "full" set.
_QVH_BINS = (('short', 0, 10), ('middle', 10, 30), ('long', 30, 150),
             ('full', None, None))
_CHARADES_BINS = (('short', 0, 15), ('middle', 15, 30), ('full', None, None))
# TACoS moments are long-tailed (test: median 14 s, 1/3 <= 9 s, 1/3 > 25 s, max 580
# s); the QVHighlights edges split it into roughly equal thirds, and `long` gets no
# upper cap so that no moment falls outside every bin.
_TACOS_BINS = (('short', 0, 10), ('middle', 10, 30), ('long', 30, math.inf),
               ('full', None, None))


def length_bins(dataset: str):
  """Length bins for a dataset name (charades* / tacos* / anything else = QVH)."""
  dataset = (dataset or '').lower()
  if dataset.startswith('charades'):
    return _CHARADES_BINS
  if dataset.startswith('tacos'):
    return _TACOS_BINS
  return _QVH_BINS


def load_jsonl(path: str) -> list:
  with open(path, 'r') as f:
    return [json.loads(line) for line in f if line.strip()]


def _pct(x) -> float:
  # Same rounding as the standalone eval: percent, 2 decimals, via string format.
  return float(f'{100 * float(x):.2f}')


def temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of windows a[..., 2] and b[..., 2] (broadcast); 0 where the union is 0."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  inter = np.clip(np.minimum(a[..., 1], b[..., 1]) -
                  np.maximum(a[..., 0], b[..., 0]), 0, None)
  union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _pad(rows, width, fill=0.0):
  """List of (n_i, ...) arrays -> (len, width, ...) array and (len, width) mask."""
  tail = np.asarray(rows[0]).shape[1:] if rows else ()
  out = np.full((len(rows), max(width, 1)) + tail, fill, np.float64)
  mask = np.zeros((len(rows), max(width, 1)), bool)
  for i, r in enumerate(rows):
    r = np.asarray(r, np.float64).reshape((-1,) + tail)[:width]
    out[i, :len(r)] = r
    mask[i, :len(r)] = True
  return out, mask


def _pack_predictions(preds):
  """Top-10 windows per query (list order), sorted by score (stable)."""
  windows, scores = [], []
  for d in preds:
    w = [list(x) for x in d.get('pred_relevant_windows', [])[:MAX_PRED_WINDOWS]]
    # A window without a score keeps its list rank: score = -rank.
    scores.append([x[2] if len(x) > 2 else -i for i, x in enumerate(w)])
    windows.append(np.asarray([x[:2] for x in w], np.float64).reshape(-1, 2))
  pw, pmask = _pad(windows, MAX_PRED_WINDOWS)
  ps, _ = _pad(scores, MAX_PRED_WINDOWS, fill=-np.inf)
  top1 = pw[:, 0].copy()  # R1 uses the first window in list order, not the best score
  order = np.argsort(-ps, axis=1, kind='stable')
  pw = np.take_along_axis(pw, order[..., None], axis=1)
  pmask = np.take_along_axis(pmask, order, axis=1)
  return top1, pw, pmask


def mr_recall_at_1(top1, has_pred, gt, gt_mask, thresholds=MR_R1_THRESHOLDS):
  """top1 (Q,2), has_pred (Q,), gt (Q,G,2), gt_mask (Q,G) -> (best IoU (Q,), {t: %})."""
  iou = np.where(gt_mask, temporal_iou(top1[:, None, :], gt), 0.0).max(axis=1)
  iou = np.where(has_pred, iou, 0.0)
  return iou, {str(t): _pct(np.mean(iou >= t)) for t in thresholds}


def mr_average_precision(pw, pmask, gt, gt_mask, thresholds=MR_AP_THRESHOLDS):
  """Per-query AP at each IoU threshold -> (Q, T).

  pw (Q,P,2) windows already sorted by score, pmask (Q,P); gt (Q,G,2), gt_mask (Q,G).
  """
  thr = np.asarray(thresholds, np.float64)
  q, p_max = pmask.shape
  g = gt.shape[1]
  iou = temporal_iou(pw[:, :, None, :], gt[:, None, :, :])  # (Q,P,G)
  locked = np.zeros((q, len(thr), g), bool)
  tp = np.zeros((q, len(thr), p_max), bool)
  # Greedy matching is sequential in rank; the loop is over <= 10 ranks only.
  for p in range(p_max):
    cand = ((iou[:, p, None, :] >= thr[None, :, None]) & ~locked &
            gt_mask[:, None, :])
    val = np.where(cand, iou[:, p, None, :], -np.inf)
    # Among equal IoUs the standalone eval takes the highest GT index first.
    pick = g - 1 - np.argmax(val[..., ::-1], axis=-1)  # (Q,T)
    hit = cand.any(-1) & pmask[:, p, None]
    tp[:, :, p] = hit
    np.put_along_axis(locked, pick[..., None],
                      np.take_along_axis(locked, pick[..., None], -1) |
                      hit[..., None], axis=-1)
  fp = pmask[:, None, :] & ~tp
  tp_c = np.cumsum(tp, -1, dtype=np.float64)
  fp_c = np.cumsum(fp, -1, dtype=np.float64)
  n_pos = gt_mask.sum(-1).astype(np.float64)[:, None, None]
  recall = tp_c / np.maximum(n_pos, 1)
  # Padded ranks repeat the previous cumulative counts, so they change nothing.
  precision = np.divide(tp_c, tp_c + fp_c, out=np.zeros_like(tp_c),
                        where=(tp_c + fp_c) > 0)
  zeros = np.zeros((q, len(thr), 1))
  mprec = np.concatenate([zeros, precision, zeros], -1)
  mrec = np.concatenate([zeros, recall, zeros + 1], -1)
  mprec = np.maximum.accumulate(mprec[..., ::-1], -1)[..., ::-1]
  return np.sum(np.diff(mrec, axis=-1) * mprec[..., 1:], -1)


def _mr_block(top1, has_pred, pw, pmask, gt, gt_mask):
  if not len(gt):  # an empty bin has no score; None keeps the JSON valid
    return {'MR-mAP': {**{str(t): None for t in MR_AP_THRESHOLDS}, 'average': None},
            'MR-R1': {str(t): None for t in MR_R1_THRESHOLDS}, 'num_queries': 0}
  ap_t = mr_average_precision(pw, pmask, gt, gt_mask).mean(0)
  mr_map = {str(t): _pct(v) for t, v in zip(MR_AP_THRESHOLDS, ap_t)}
  mr_map['average'] = _pct(np.mean(ap_t))
  _, r1 = mr_recall_at_1(top1, has_pred, gt, gt_mask)
  return {'MR-mAP': mr_map, 'MR-R1': r1, 'num_queries': int(len(gt))}


def eval_moment_retrieval(preds, gts, dataset='qvhighlights') -> dict:
  """preds/gts aligned lists of rows (same qid order) -> {bin: metrics}."""
  keep = [i for i, d in enumerate(gts) if len(d.get('relevant_windows', []))]
  preds = [preds[i] for i in keep]
  gts = [gts[i] for i in keep]
  top1, pw, pmask = _pack_predictions(preds)
  has_pred = pmask.any(-1)
  gt_rows = [np.asarray(d['relevant_windows'], np.float64).reshape(-1, 2)
             for d in gts]
  gt, gt_mask = _pad(gt_rows, max([len(r) for r in gt_rows] + [1]))
  gt_len = gt[..., 1] - gt[..., 0]
  out = {}
  for name, lo, hi in length_bins(dataset):
    m = gt_mask if lo is None else gt_mask & (gt_len > lo) & (gt_len <= hi)
    sel = m.any(-1)
    out[name] = _mr_block(top1[sel], has_pred[sel], pw[sel], pmask[sel],
                          gt[sel], m[sel])
  return out


def _gt_saliency(d, clip_length):
  """(num_clips, 3) annotator scores in [0, 4] over the whole video."""
  n = int(d['duration'] / clip_length)
  full = np.zeros((n, 3))
  ids = np.asarray(d['relevant_clip_ids'], int)
  sc = np.asarray(d['saliency_scores'], np.float64).reshape(len(ids), -1)
  ok = ids < n  # ids past the duration would crash the standalone eval
  full[ids[ok], :sc.shape[1]] = sc[ok]
  return full


def hl_average_precision(scores, labels, mask):
  """Interpolated AP per row, the sklearn-precision_recall_curve way.

  scores, labels (R,L), mask (R,L). Tied scores form one threshold; AP is the mean
  over distinct recall levels of the best precision at that recall or higher.
  """
  s = np.where(mask, scores, -np.inf)
  order = np.argsort(-s, axis=1, kind='stable')
  s = np.take_along_axis(s, order, 1)
  y = np.take_along_axis(labels * mask, order, 1)
  v = np.take_along_axis(mask, order, 1)
  tp = np.cumsum(y, 1)
  fp = np.cumsum((1 - y) * v, 1)
  nxt_differs = np.concatenate(
      [(s[:, 1:] != s[:, :-1]) | ~v[:, 1:], np.ones((len(s), 1), bool)], 1)
  end = v & nxt_differs  # last element of each tie group = one threshold
  prec = np.where(end, tp / np.maximum(tp + fp, 1), 0.0)
  prec_interp = np.maximum.accumulate(prec[:, ::-1], 1)[:, ::-1]
  last_tp = np.maximum.accumulate(np.where(end, tp, 0), 1)
  prev_tp = np.concatenate([np.zeros((len(s), 1)), last_tp[:, :-1]], 1)
  counted = end & (tp > prev_tp)  # the threshold where a new recall level starts
  n = counted.sum(1)
  ap = np.where(counted, prec_interp, 0).sum(1) / np.maximum(n, 1)
  # One-class rows: all negative -> 0, all positive -> 1 (as the standalone eval).
  n_pos = (labels * mask).sum(1)
  n_all = mask.sum(1)
  ap = np.where(n_pos == 0, 0.0, ap)
  return np.where((n_pos == n_all) & (n_all > 0), 1.0, ap)


def eval_highlight(preds, gts, clip_length=2.0) -> dict:
  gt_full = [_gt_saliency(d, clip_length) for d in gts]
  n_clips = np.asarray([len(g) for g in gt_full])
  width = max(int(n_clips.max()), 1)
  gt_sc, mask = _pad(gt_full, width)  # (Q,L,3), (Q,L)
  # Predictions are truncated or zero-padded to the video's clip count.
  pred = [np.asarray(d['pred_saliency_scores'], np.float64)[:n]
          for d, n in zip(preds, n_clips)]
  pred, _ = _pad(pred, width)
  # Top-scored clip over the full predicted list; an empty list points at clip 0.
  top = np.asarray([np.argmax(d['pred_saliency_scores'])
                    if len(d['pred_saliency_scores']) else 0 for d in preds])
  in_range = top < n_clips
  out = {}
  for name, min_score in HL_LEVELS:
    binary = (gt_sc >= min_score).astype(np.float64)
    hit = binary[np.arange(len(top)), np.minimum(top, width - 1)].max(-1)
    hit = np.where(in_range, hit, 0.0)
    q, l, a = binary.shape
    ap = hl_average_precision(
        np.repeat(pred[:, None, :], a, 1).reshape(q * a, l),
        binary.transpose(0, 2, 1).reshape(q * a, l),
        np.repeat(mask[:, None, :], a, 1).reshape(q * a, l))
    out[f'HL-min-{name}'] = {'HL-mAP': _pct(ap.mean()), 'HL-Hit1': _pct(hit.mean())}
  return out


def compute_metrics(predictions: list, ground_truth: list,
                    dataset: str = 'qvhighlights', match_number: bool = True,
                    clip_length: float = 2.0) -> dict:
  """Scores prediction rows against GT rows -> {"brief": {...}, <detailed>...}.

  predictions: rows {qid, pred_relevant_windows: [[st, ed, score], ...],
    optional pred_saliency_scores}; ground_truth: rows {qid, relevant_windows,
    optional duration / relevant_clip_ids / saliency_scores}.
  match_number: as in the standalone eval, the qid sets must be equal; with False
    only the shared qids are scored.
  clip_length: seconds per clip for the saliency (HL) metrics.
  """
  pred_by_qid = {d['qid']: d for d in predictions}
  gt_qids = [d['qid'] for d in ground_truth]
  if match_number and set(pred_by_qid) != set(gt_qids):
    missing = set(gt_qids) - set(pred_by_qid)
    extra = set(pred_by_qid) - set(gt_qids)
    raise ValueError(
        f'qids of predictions and ground truth differ: {len(missing)} GT qids '
        f'without prediction (e.g. {sorted(missing)[:5]}), {len(extra)} predicted '
        f'qids not in GT (e.g. {sorted(extra)[:5]}); pass match_number=False to '
        'score the shared qids only')
  gts = [d for d in ground_truth if d['qid'] in pred_by_qid]
  preds = [pred_by_qid[d['qid']] for d in gts]
  if not gts:
    raise ValueError('no query is shared by predictions and ground truth')

  detailed, brief = {}, {}
  if any('pred_relevant_windows' in d for d in preds):
    mr = eval_moment_retrieval(preds, gts, dataset)
    detailed.update(mr)
    full = mr['full']
    for t in ('0.1', '0.3', '0.5', '0.7'):
      brief[f'MR-full-R1@{t}'] = full['MR-R1'][t]
    brief['MR-full-mAP'] = full['MR-mAP']['average']
    brief['MR-full-mAP@0.5'] = full['MR-mAP']['0.5']
    brief['MR-full-mAP@0.75'] = full['MR-mAP']['0.75']
    for name, lo, _ in length_bins(dataset):
      if lo is not None:  # bins a dataset lacks (Charades: long) are left out
        brief[f'MR-{name}-mAP'] = mr[name]['MR-mAP']['average']

  has_hl = (all('pred_saliency_scores' in d for d in preds) and
            all('saliency_scores' in d and 'relevant_clip_ids' in d
                and 'duration' in d for d in gts))
  if has_hl:
    hl = eval_highlight(preds, gts, clip_length)
    detailed.update(hl)
    brief['HL-min-VeryGood-mAP'] = hl['HL-min-VeryGood']['HL-mAP']
    brief['HL-min-VeryGood-Hit1'] = hl['HL-min-VeryGood']['HL-Hit1']

  # Same layout as the standalone eval: sorted brief first, then sorted details.
  result = collections.OrderedDict()
  result['brief'] = collections.OrderedDict(sorted(brief.items()))
  result.update(sorted(detailed.items()))
  return result


def evaluate_files(predictions_path: str, ground_truth_path: str,
                   dataset: str = 'qvhighlights', **kwargs) -> dict:
  return compute_metrics(load_jsonl(predictions_path),
                         load_jsonl(ground_truth_path), dataset, **kwargs)
