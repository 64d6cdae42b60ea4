"""Stored examples -> model inputs and targets, one padded batch at a time.

Facts from the release's loader (start_end_dataset.py), without its `[:-1]` bug:
every clip is kept, and spans are normalized by the seconds the kept clips span,
`L * clip_len` (for pooled C3D data clip_len = duration / num_clips).

`max_v_l` truncation: a video longer than `max_v_l` clips keeps its first `max_v_l`
clips; windows are clipped to the kept part, windows that start after it are
dropped (training examples left with none are skipped by the planner, see
`pipeline.py`), and normalized spans refer to the kept part.
"""
from typing import Dict

import numpy as np

from momentdiff_jax.data.store import decode_into

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
  Draws positions in the pools (`rng.choice(len)`, the same draws as choosing from
  the pool arrays) and maps them to clips, without building the pools.
  """
  n_pos = ed + 1 - st
  pos = st + rng.choice(n_pos, n, replace=n_pos < n)
  n_neg = num_clips - n_pos
  if n_neg:
    neg = rng.choice(n_neg, n, replace=n_neg < n)
    neg = np.where(neg < st, neg, neg + n_pos)   # skip over the window
  else:
    neg = np.zeros(n, np.int64)
  return pos.astype(np.int32), neg.astype(np.int32)


def append_tef(video: np.ndarray) -> np.ndarray:
  """(L, D) -> (L, D + 2): the release's temporal endpoint features [i/L, (i+1)/L]."""
  n = video.shape[0]
  st = np.arange(n, dtype=np.float32) / n
  return np.concatenate([video, np.stack([st, st + 1.0 / n], 1)], 1)


def targets(windows: np.ndarray, n_stored: int, time_scale: float, data_cfg,
            rng: np.random.Generator, train: bool):
  """Targets of one example from its GT windows (seconds) and stored clip count.

  windows: float32 (W, 2). Returns (n, spans, labels, pos, neg, span_s): kept
  clips n, span_targets (W, 2)
  (cx, w) with W <= max_windows, saliency_labels (n,), saliency_pos_idx / neg_idx
  (k,), and span_s, the seconds that span 1.0 stands for.
  """
  max_v_l = data_cfg.max_v_l
  n = min(n_stored, max_v_l) if max_v_l > 0 else n_stored
  clip_len = float(time_scale) / n_stored
  span_s = n * clip_len
  windows = windows[windows[:, 0] < span_s]      # drop windows cut by max_v_l
  first = windows[0] if len(windows) else None   # saliency uses the first window
  m = data_cfg.max_windows
  if len(windows) > m:
    # The release shuffles and keeps max_windows; deterministic at eval.
    windows = windows[np.sort(rng.permutation(len(windows))[:m])] if train else windows[:m]
  se = np.minimum(np.maximum(windows / span_s, 0.0), 1.0)
  spans = np.empty(se.shape, np.float32)
  spans[:, 0] = (se[:, 0] + se[:, 1]) / 2
  spans[:, 1] = se[:, 1] - se[:, 0]

  k = data_cfg.num_saliency_pairs
  labels = np.zeros(n, np.float32)
  if first is not None:
    st, ed = saliency_window_clips(first, clip_len, n)
    labels[st:ed + 1] = 1.0
    pos, neg = sample_saliency_pairs(st, ed, n, k, rng)
  else:   # unlabelled rows (e.g. a test release without windows)
    pos, neg = np.zeros(k, np.int32), np.zeros(k, np.int32)
  return n, spans, labels, pos, neg, span_s


def plan_batch(reader, indices, length: int, data_cfg, rngs, train: bool,
               example_mask=None, out_indices=None) -> Dict[str, np.ndarray]:
  """Everything of a batch but its features, from the split's records (small).

  Returns the BATCH_KEYS arrays except video_feat / query_feat, plus where to
  gather those from: `_video_start` (B,) row of each video in the store's
  videos array, `_text_start` (B,) row of each query in the split's text array
  (clip and token counts are num_clips and query_mask). `rngs[j]` draws example
  j's window subset and saliency pairs. This is the per-example Python work that
  grain worker processes do; `gather_features` is the bulk copy.
  """
  b = len(indices)
  lq, m, k = data_cfg.max_q_l, data_cfg.max_windows, data_cfg.num_saliency_pairs
  out = {
      'video_mask': np.zeros((b, length), np.float32),
      'query_mask': np.zeros((b, lq), np.float32),
      'span_targets': np.zeros((b, m, 2), np.float32),
      'span_mask': np.zeros((b, m), np.float32),
      'saliency_labels': np.zeros((b, length), np.float32),
      'saliency_pos_idx': np.zeros((b, k), np.int32),
      'saliency_neg_idx': np.zeros((b, k), np.int32),
      'duration': np.zeros((b,), np.float32),
      'num_clips': np.zeros((b,), np.int32),
      'example_mask': np.ones((b,), np.float32),
      'index': np.asarray(indices, np.int32),
      # Seconds that normalized span 1.0 stands for (kept clips x clip_len):
      # predictions in seconds = normalized spans * span_seconds (clip to duration).
      'span_seconds': np.zeros((b,), np.float32),
      '_video_start': np.zeros((b,), np.int64),
      '_text_start': np.zeros((b,), np.int64),
  }
  records = reader.records[np.asarray(indices, np.int64)]
  offsets = reader.video_offsets
  for j, rec in enumerate(records):
    n, spans, labels, pos, neg, span_s = targets(
        reader.windows(rec), int(rec['num_clips']), float(rec['time_scale']),
        data_cfg, rngs[j], train)
    assert n <= length, (n, length)
    w = len(spans)
    out['video_mask'][j, :n] = 1.0
    out['query_mask'][j, :min(int(rec['text_len']), lq)] = 1.0
    out['span_targets'][j, :w] = spans
    out['span_mask'][j, :w] = 1.0
    out['saliency_labels'][j, :n] = labels
    out['saliency_pos_idx'][j] = pos
    out['saliency_neg_idx'][j] = neg
    out['num_clips'][j] = n
    out['span_seconds'][j] = span_s
  out['duration'][:] = records['duration']
  out['_video_start'][:] = offsets[records['video']]
  out['_text_start'][:] = records['text_start']
  if example_mask is not None:
    out['example_mask'][:] = example_mask
  if out_indices is not None:
    out['index'][:] = out_indices
  return out


def gather_features(reader, part: Dict[str, np.ndarray], data_cfg) -> Dict[str, np.ndarray]:
  """`plan_batch` output -> the full batch: video_feat (B, L, Dv[+2]), query_feat
  (B, max_q_l, Dt).

  Stored features are widened to float32 straight into the batch (one copy of
  each clip); tokens are L2-normalized (`normalize_text`); TEF columns
  [i/n, (i+1)/n] are appended on the real clips, as `append_tef` does.
  """
  batch = {k: v for k, v in part.items() if not k.startswith('_')}
  b, length = batch['video_mask'].shape
  lq = batch['query_mask'].shape[1]
  dv, dt = reader.video_dim, reader.text_dim
  tef = 2 if data_cfg.use_tef else 0
  # np.empty + zeroing only the padding: the batch's bytes are written once.
  video = np.empty((b, length, dv + tef), np.float32)
  query = np.empty((b, lq, dt), np.float32)
  videos, texts = reader.videos, reader.texts
  clips = batch['num_clips']
  tokens = batch['query_mask'].sum(1).astype(np.int64)
  for j in range(b):
    s, n = int(part['_video_start'][j]), int(clips[j])
    decode_into(video[j, :n, :dv], videos[s:s + n], reader.feature_dtype)
    video[j, n:] = 0.0
    s, n = int(part['_text_start'][j]), int(tokens[j])
    decode_into(query[j, :n], texts[s:s + n], reader.feature_dtype)
    query[j, n:] = 0.0
  if data_cfg.normalize_text:
    query /= np.linalg.norm(query, axis=-1, keepdims=True) + 1e-5   # as l2_normalize
  if tef:
    n = clips.astype(np.float32)[:, None]
    st = np.arange(length, dtype=np.float32)[None] / n
    mask = batch['video_mask']
    video[:, :, dv] = st * mask
    video[:, :, dv + 1] = (st + np.float32(1.0) / n) * mask
  batch['video_feat'], batch['query_feat'] = video, query
  return batch
