"""Location-prior baseline: the best single fixed window chosen on train.

A dataset where one fixed (start, end) fraction of every video scores well measures
the location prior, not retrieval. `fixed_window_baseline` picks, on the train
split, the window [a, b] (fractions of the duration, grid step `step`) with the
highest R1@iou (IoU with the best-matching GT window >= iou) and reports its R1 on
the test split, in percent.

`linear_probe_baseline` is the opposite reference: a ridge probe that must learn
the query -> clip mapping, to show the signal is there.

  python -m momentdiff_jax.data.baselines [--data_dir=DIR]   (default: synthetic)
"""
import json
import sys
from typing import List

from absl import flags
import numpy as np

from momentdiff_jax.common import app
from momentdiff_jax.data import store


def _normalized_windows(rows: List[dict]):
  """List of (W, 2) GT windows as fractions of the duration."""
  return [np.asarray(r['relevant_windows'], np.float64) / float(r['duration'])
          for r in rows if r.get('relevant_windows')]


def _hits(cands: np.ndarray, windows, iou: float) -> np.ndarray:
  """cands (C, 2) -> (C,) number of queries whose best GT IoU >= iou."""
  hits = np.zeros(len(cands))
  for w in windows:
    inter = np.clip(np.minimum(cands[:, None, 1], w[None, :, 1]) -
                    np.maximum(cands[:, None, 0], w[None, :, 0]), 0, None)
    union = ((cands[:, 1] - cands[:, 0])[:, None] + (w[:, 1] - w[:, 0])[None] - inter)
    hits += (inter / union).max(1) >= iou
  return hits


def fixed_window_baseline(data_dir: str, iou: float = 0.5, step: float = 0.02,
                          train_split: str = 'train', test_split: str = 'test') -> dict:
  """Returns {'window': [a, b], 'train_r1': %, 'test_r1': %} (R1@iou)."""
  grid = np.round(np.arange(0.0, 1.0 + 1e-9, step), 6)
  a, b = np.meshgrid(grid, grid, indexing='ij')
  cands = np.stack([a.ravel(), b.ravel()], 1)
  cands = cands[cands[:, 1] > cands[:, 0]]
  train = _normalized_windows(store.load_rows(data_dir, train_split))
  test = _normalized_windows(store.load_rows(data_dir, test_split))
  train_hits = _hits(cands, train, iou)
  best = int(np.argmax(train_hits))
  test_hit = _hits(cands[best:best + 1], test, iou)[0]
  return {'window': cands[best].tolist(), 'iou': iou,
          'train_r1': round(float(100.0 * train_hits[best] / len(train)), 2),
          'test_r1': round(float(100.0 * test_hit / len(test)), 2)}


def _load(data_dir: str, split: str):
  bags, videos, windows = [], [], []
  for ex in store.iter_split(data_dir, split):
    bags.append(ex['query'].sum(0))
    videos.append(ex['video'])
    windows.append(ex['windows'] / ex['time_scale'] * len(ex['video']))  # in clips
  return np.asarray(bags), videos, windows


def linear_probe_baseline(data_dir: str, iou: float = 0.5, ridge: float = 0.1) -> dict:
  """A learnability reference: ridge map from the bag of query tokens to the mean
  feature of the first GT window's clips (fit on train); on test, clips scoring
  above the midpoint of their score range around the best clip form the window.
  Returns {'test_r1': %} (R1@iou). A trained model should beat it.
  """
  x, vids, wins = _load(data_dir, 'train')
  y = np.stack([v[int(w[0, 0]):max(int(w[0, 0]) + 1, int(np.ceil(w[0, 1])))].mean(0)
                for v, w in zip(vids, wins) if len(w)])
  x = np.stack([b for b, w in zip(x, wins) if len(w)])
  proj = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
  x, vids, wins = _load(data_dir, 'test')
  hits = 0
  for b, v, w in zip(x, vids, wins):
    s = v @ (b @ proj)
    top, th = int(s.argmax()), (s.max() + s.min()) / 2
    lo, hi = top, top
    while lo > 0 and s[lo - 1] > th:
      lo -= 1
    while hi < len(s) - 1 and s[hi + 1] > th:
      hi += 1
    hits += _hits(np.array([[lo, hi + 1.0]]), [w], iou)[0]
  return {'iou': iou, 'test_r1': round(float(100.0 * hits / len(x)), 2)}


FLAGS = flags.FlagValues()
flags.DEFINE_string('data_dir', '', 'dataset dir (default: the built-in synthetic one)',
                    flag_values=FLAGS)
flags.DEFINE_float('iou', 0.5, 'IoU threshold of R1', flag_values=FLAGS)


def _main():
  data_dir = FLAGS.data_dir
  if not data_dir:
    from momentdiff_jax.data import synthetic
    data_dir = synthetic.ensure_synthetic()
  print(json.dumps({'fixed_window': fixed_window_baseline(data_dir, FLAGS.iou),
                    'linear_probe': linear_probe_baseline(data_dir, FLAGS.iou)}))


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
