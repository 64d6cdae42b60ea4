"""One stored example -> model inputs and targets; a list of them -> a padded batch.

Facts from the release's loader (start_end_dataset.py), without its `[:-1]` bug:
every clip is kept, and spans are normalized by the seconds the kept clips span,
`L * clip_len` (for pooled C3D data clip_len = duration / num_clips).

`max_v_l` truncation: a video longer than `max_v_l` clips keeps its first `max_v_l`
clips; windows are clipped to the kept part, windows that start after it are
dropped (training examples left with none are skipped by the planner, see
`pipeline.py`), and normalized spans refer to the kept part.
"""
from typing import Dict, List, Optional

import numpy as np

from momentdiff_jax.data.sources import l2_normalize

# Keys of a batch and their dtypes (docs/DESIGN.md, "Batch").
BATCH_KEYS = ('video_feat', 'video_mask', 'query_feat', 'query_mask', 'span_targets',
              'span_mask', 'saliency_labels', 'saliency_pos_idx', 'saliency_neg_idx',
              'duration', 'num_clips', 'example_mask', 'index', 'span_seconds')


def kept_clips(num_clips, max_v_l: int):
  """Clips kept after the `max_v_l` cap (max_v_l <= 0: no cap)."""
  return np.minimum(num_clips, max_v_l) if max_v_l > 0 else num_clips


def example_rng(seed: int, epoch: int, index: int, train: bool = True):
  """Per-example generator from (seed, epoch, index): independent of sharding."""
  return np.random.default_rng([int(seed), 0 if train else 1, int(epoch), int(index)])


def saliency_window_clips(window, clip_len: float, num_clips: int):
  """Inclusive clip range [st, ed] of a window in seconds (the release's rule)."""
  st = int(window[0] / clip_len)
  ed = max(0, min(int(window[1] / clip_len), num_clips) - 1)
  return min(st, ed), ed


def sample_saliency_pairs(st: int, ed: int, num_clips: int, n: int, rng):
  """n positive clip indices inside [st, ed] and n negatives outside.

  As the release: distinct samples when the pool allows; a one-clip window repeats
  its clip; with fewer than n negatives the release uses index 0, we repeat the
  pool instead (index 0 may lie inside the window) and use 0 only when it is empty.
  """
  pos_pool = np.arange(st, ed + 1)
  pos = (rng.choice(pos_pool, n, replace=False) if len(pos_pool) >= n
         else rng.choice(pos_pool, n, replace=True))
  neg_pool = np.concatenate([np.arange(0, st), np.arange(ed + 1, num_clips)])
  if len(neg_pool) >= n:
    neg = rng.choice(neg_pool, n, replace=False)
  elif len(neg_pool):
    neg = rng.choice(neg_pool, n, replace=True)
  else:
    neg = np.zeros(n, np.int64)
  return pos.astype(np.int32), neg.astype(np.int32)


def append_tef(video: np.ndarray) -> np.ndarray:
  """(L, D) -> (L, D + 2): the release's temporal endpoint features [i/L, (i+1)/L]."""
  n = video.shape[0]
  st = np.arange(n, dtype=np.float32) / n
  return np.concatenate([video, np.stack([st, st + 1.0 / n], 1)], 1)


def process_example(ex: dict, data_cfg, rng: np.random.Generator,
                    train: bool) -> Dict[str, np.ndarray]:
  """Stored example -> unpadded arrays.

  Returns video_feat (L, Dv[+2]), query_feat (Lq, Dt), span_targets (W, 2) (cx, w)
  with W <= max_windows, saliency_labels (L,), saliency_pos_idx / neg_idx (n,),
  duration, num_clips, index, span_seconds (seconds that span 1.0 stands for).
  """
  video = np.asarray(ex['video'], np.float32)
  n_stored = video.shape[0]
  n = int(kept_clips(n_stored, data_cfg.max_v_l))
  clip_len = float(ex['time_scale']) / n_stored
  span_s = n * clip_len
  video = video[:n]
  if data_cfg.use_tef:
    video = append_tef(video)
  query = np.asarray(ex['query'], np.float32)[:data_cfg.max_q_l]
  if data_cfg.normalize_text:
    query = l2_normalize(query)

  windows = np.asarray(ex['windows'], np.float32).reshape(-1, 2)
  windows = windows[windows[:, 0] < span_s]      # drop windows cut by max_v_l
  first = windows[0] if len(windows) else None   # saliency uses the first window
  m = data_cfg.max_windows
  if len(windows) > m:
    # The release shuffles and keeps max_windows; deterministic at eval.
    windows = windows[np.sort(rng.permutation(len(windows))[:m])] if train else windows[:m]
  se = np.clip(windows / span_s, 0.0, 1.0)
  spans = np.stack([(se[:, 0] + se[:, 1]) / 2, se[:, 1] - se[:, 0]], 1)

  k = data_cfg.num_saliency_pairs
  labels = np.zeros(n, np.float32)
  if first is not None:
    st, ed = saliency_window_clips(first, clip_len, n)
    labels[st:ed + 1] = 1.0
    pos, neg = sample_saliency_pairs(st, ed, n, k, rng)
  else:   # unlabelled rows (e.g. a test release without windows)
    pos, neg = np.zeros(k, np.int32), np.zeros(k, np.int32)
  return {'video_feat': video, 'query_feat': query,
          'span_targets': spans.astype(np.float32), 'saliency_labels': labels,
          'saliency_pos_idx': pos, 'saliency_neg_idx': neg,
          'duration': np.float32(ex['duration']), 'num_clips': n,
          'span_seconds': np.float32(span_s),
          'index': int(ex['index'])}


def collate(items: List[dict], length: int, data_cfg,
            example_mask: Optional[List[float]] = None,
            indices: Optional[List[int]] = None) -> Dict[str, np.ndarray]:
  """Pads processed examples to (B, length) clips, max_q_l tokens, max_windows."""
  b = len(items)
  dv = items[0]['video_feat'].shape[1]
  dt = items[0]['query_feat'].shape[1]
  lq, m, k = data_cfg.max_q_l, data_cfg.max_windows, data_cfg.num_saliency_pairs
  out = {
      'video_feat': np.zeros((b, length, dv), np.float32),
      'video_mask': np.zeros((b, length), np.float32),
      'query_feat': np.zeros((b, lq, dt), np.float32),
      'query_mask': np.zeros((b, lq), np.float32),
      'span_targets': np.zeros((b, m, 2), np.float32),
      'span_mask': np.zeros((b, m), np.float32),
      'saliency_labels': np.zeros((b, length), np.float32),
      'saliency_pos_idx': np.zeros((b, k), np.int32),
      'saliency_neg_idx': np.zeros((b, k), np.int32),
      'duration': np.zeros((b,), np.float32),
      'num_clips': np.zeros((b,), np.int32),
      'example_mask': np.ones((b,), np.float32),
      'index': np.zeros((b,), np.int32),
      # Seconds that normalized span 1.0 stands for (kept clips x clip_len):
      # predictions in seconds = normalized spans * span_seconds (clip to duration).
      'span_seconds': np.zeros((b,), np.float32),
  }
  for i, it in enumerate(items):
    n, nq, w = len(it['video_feat']), len(it['query_feat']), len(it['span_targets'])
    assert n <= length, (n, length)
    out['video_feat'][i, :n] = it['video_feat']
    out['video_mask'][i, :n] = 1.0
    out['query_feat'][i, :nq] = it['query_feat']
    out['query_mask'][i, :nq] = 1.0
    out['span_targets'][i, :w] = it['span_targets']
    out['span_mask'][i, :w] = 1.0
    out['saliency_labels'][i, :n] = it['saliency_labels']
    out['saliency_pos_idx'][i] = it['saliency_pos_idx']
    out['saliency_neg_idx'][i] = it['saliency_neg_idx']
    out['duration'][i] = it['duration']
    out['num_clips'][i] = n
    out['index'][i] = it['index']
    out['span_seconds'][i] = it['span_seconds']
  if example_mask is not None:
    out['example_mask'][:] = example_mask
  if indices is not None:
    out['index'][:] = indices
  return out
