"""Charades-STA-Len / -Mom anti-bias splits (MomentDiff paper, Sec. 4.2).

Len: train = every original-train pair with a short GT (< 10 s) + sampled long pairs
(> 10 s) making 20% of the split; test = every original-test long pair + sampled
short pairs making 20%.
Mom: train = every original-train pair ending before 15 s + sampled pairs starting
after 15 s (20%); test = every original-test pair starting after 15 s + sampled
pairs ending before 15 s (20%). Pairs spanning 15 s are in neither group.

Thresholds follow the authors' files, which the paper text ("<= 10 s") does not
quite describe: comparisons are strict and use float differences (`end - start`),
so a window of exactly 10.0 s (or ending/starting at exactly 15 s) is in neither
group, while [6.1, 16.1] (10.000000000000002 in floats) is long. The sampled share
is floor(n_all / 4) pairs, i.e. 20% of the split. With these rules the counts equal
the authors' files exactly (Len 11633 / 985, Mom 6662 / 1297). Rows keep their
original qids (text features are looked up by qid; the authors renumbered them)
and their original order.
"""
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from momentdiff_jax.common import atomic

LEN_THRESHOLD = 10.0
MOM_THRESHOLD = 15.0


def _groups(rows: List[dict], kind: str) -> Tuple[np.ndarray, np.ndarray]:
  """Boolean masks (bias group, anti-bias group) over rows, by the first window."""
  s = np.array([r['relevant_windows'][0][0] for r in rows], np.float64)
  e = np.array([r['relevant_windows'][0][1] for r in rows], np.float64)
  if kind == 'len':
    return e - s < LEN_THRESHOLD, e - s > LEN_THRESHOLD     # short, long
  if kind == 'mom':
    return e < MOM_THRESHOLD, s > MOM_THRESHOLD             # early, late
  raise ValueError(f'kind must be len|mom, got {kind!r}')


def _compose(rows: List[dict], all_mask: np.ndarray, sample_mask: np.ndarray,
             rng: np.random.Generator) -> List[dict]:
  keep = np.flatnonzero(all_mask)
  pool = np.flatnonzero(sample_mask)
  n = len(keep) // 4          # 20% of the split
  if n > len(pool):
    raise ValueError(f'need {n} sampled pairs but only {len(pool)} qualify')
  picked = rng.choice(pool, n, replace=False)
  return [rows[i] for i in np.sort(np.concatenate([keep, picked]))]


def make_splits(train_rows: List[dict], test_rows: List[dict], kind: str,
                seed: int = 0) -> Dict[str, List[dict]]:
  """Returns {'train': rows, 'test': rows} by the paper's 80/20 rules."""
  rng = np.random.default_rng(seed)
  bias_tr, anti_tr = _groups(train_rows, kind)
  bias_te, anti_te = _groups(test_rows, kind)
  return {'train': _compose(train_rows, bias_tr, anti_tr, rng),
          'test': _compose(test_rows, anti_te, bias_te, rng)}


def split_stats(rows: List[dict], kind: str) -> Dict[str, float]:
  """Counts, bias-group share, GT length and location statistics of a split."""
  s = np.array([r['relevant_windows'][0][0] for r in rows], np.float64)
  e = np.array([r['relevant_windows'][0][1] for r in rows], np.float64)
  d = np.array([r['duration'] for r in rows], np.float64)
  bias, anti = _groups(rows, kind)
  return {
      'pairs': len(rows), 'videos': len({r['vid'] for r in rows}),
      'bias_share': float(bias.mean()), 'antibias_share': float(anti.mean()),
      'len_mean_s': float((e - s).mean()), 'len_median_s': float(np.median(e - s)),
      'start_mean_s': float(s.mean()), 'end_mean_s': float(e.mean()),
      'center_norm_mean': float(((s + e) / 2 / d).mean()),
      'width_norm_mean': float(((e - s) / d).mean()),
  }


FILENAMES = {'len': ('train_len_80.jsonl', 'test_len_80.jsonl'),
             'mom': ('train_mom_80.jsonl', 'test_mom_80.jsonl')}


def read_rows(path: str) -> List[dict]:
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def write_splits(splits: Dict[str, List[dict]], kind: str, output_dir: str):
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for split, name in zip(('train', 'test'), FILENAMES[kind]):
    path = os.path.join(output_dir, name)
    atomic.write_jsonl(path, splits[split])
    paths.append(path)
  return paths


def stats_table(splits: Dict[str, List[dict]], kind: str,
                reference_dir: Optional[str] = None) -> str:
  """Text table: ours vs the authors' files (when `reference_dir` has them)."""
  names = {'len': ('short(<10s)', 'long(>10s)'),
           'mom': ('end<15s', 'start>15s')}[kind]
  cols = []
  for split, fname in zip(('train', 'test'), FILENAMES[kind]):
    cols.append((f'{split} (ours)', split_stats(splits[split], kind)))
    ref = os.path.join(reference_dir, fname) if reference_dir else None
    if ref and os.path.exists(ref):
      cols.append((f'{split} (authors)', split_stats(read_rows(ref), kind)))
  keys = list(cols[0][1])
  labels = {'bias_share': f'share {names[0]}', 'antibias_share': f'share {names[1]}'}
  lines = [f'{"":22s}' + ''.join(f'{c:>16s}' for c, _ in cols)]
  for k in keys:
    vals = ''.join(f'{v[k]:16d}' if isinstance(v[k], int) else f'{v[k]:16.3f}'
                   for _, v in cols)
    lines.append(f'{labels.get(k, k):22s}' + vals)
  return '\n'.join(lines)


# ---------------------------------------------------------------- the authors' own files
def _row_key(r: dict) -> tuple:
  """(vid, query, windows to 0.01 s): what identifies a pair in both file families."""
  return (r['vid'], r['query'], tuple(tuple(round(float(x), 2) for x in w)
                                      for w in r['relevant_windows']))


def restore_qids(rows: List[dict], originals: List[dict], near_text: float = 0.0):
  """The authors' Len/Mom rows with the qids of the original Charades-STA rows.

  The authors renumbered qids (their numbering restarts and reuses values), while the
  public text features are keyed by the original qids. Each row is matched to the one
  original row with the same vid, query and windows; only the qid changes. With
  `near_text` > 0, a row without an exact match takes the original row of the same vid
  and windows whose query is most similar (difflib ratio >= near_text; the authors
  fixed a few typos, e.g. "adn llooked" -> "and looked"); its features are then those
  of the original wording.

  Returns (mapped rows in file order, unmapped [(line, row)], near [(line, row,
  original query)]). Unmapped rows are left out of the mapped list.
  """
  import difflib  # pylint: disable=import-outside-toplevel
  by_key, by_place = {}, {}
  for o in originals:
    by_key.setdefault(_row_key(o), []).append(o)
    by_place.setdefault((o['vid'], _row_key(o)[2]), []).append(o)
  out, unmapped, near, used = [], [], [], {}
  for line, r in enumerate(rows, 1):
    found = by_key.get(_row_key(r), [])
    match = found[0] if len(found) == 1 else None
    if match is None and near_text > 0 and not found:
      cands = by_place.get((r['vid'], _row_key(r)[2]), [])
      scored = sorted(((difflib.SequenceMatcher(None, r['query'], o['query']).ratio(), i)
                       for i, o in enumerate(cands)), reverse=True)
      if scored and scored[0][0] >= near_text and (len(scored) == 1 or
                                                   scored[1][0] < scored[0][0]):
        match = cands[scored[0][1]]
        near.append((line, r, match['query']))
    if match is None or match['qid'] in used:
      unmapped.append((line, r))
      continue
    used[match['qid']] = line
    out.append(dict(r, qid=match['qid']))
  return out, unmapped, near
