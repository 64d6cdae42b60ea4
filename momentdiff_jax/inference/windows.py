"""Sliding windows for videos longer than the trained length (docs/long_videos.md).

A video of L > `data.max_v_l` clips is cut into windows of S = `max_v_l` clips whose
neighbours share about `inference.window_overlap` x S clips; each window is a "video"
of S clips as in training (its own TEF [i/S, (i+1)/S]); the model's spans of every
window are mapped back to seconds of the whole video, a moment cut by a window border
is joined from its two halves, and the candidates of all windows go through one
temporal NMS and one ranking by score.

Scores across windows: the model's foreground probability is learnt on videos that
always hold the moment, so a window without it still gets confident spans (~0.6 where
the right window gets ~0.7, synthetic data); the saliency head is learnt against
other videos' queries too and tells the windows apart. With `window_score='saliency'`
a candidate's score is its probability x sigmoid(mean clip saliency over its span)
(synthetic 8x-long videos: R1@0.5 82.5 -> 99.0, docs/long_videos.md); 'model' keeps the
probability alone.

Pure numpy (host side, after the compiled sampler). Shapes: W windows, N spans per
window, K candidates over all windows, D clip feature size.
"""
import dataclasses
from typing import Optional

import numpy as np

from momentdiff_jax.inference import postprocess

# Defaults of `config.inference` for configs written before it existed.
DEFAULTS = {'sliding_windows': True, 'window_overlap': 0.25, 'window_nms_threshold': 0.5,
            'window_join_score': 0.3, 'window_score': 'saliency'}
SCORES = ('saliency', 'model')


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `config` says about sliding windows (see `settings`)."""
  enabled: bool
  size: int             # S clips per window (data.max_v_l)
  overlap: float        # fraction of S shared by neighbouring windows
  nms_threshold: float  # IoU above which the lower-scored candidate is dropped
  join_score: float     # both halves of a joined moment score at least this
  score: str = 'saliency'   # 'saliency': probability x sigmoid(mean saliency); 'model'


def settings(config) -> Settings:
  """`config.inference` (absent keys: DEFAULTS) and `data.max_v_l`; refuses bad values."""
  inf = config.get('inference') or {}
  get = lambda k: inf.get(k, DEFAULTS[k]) if hasattr(inf, 'get') else DEFAULTS[k]
  size = int(config.data.max_v_l)
  s = Settings(bool(get('sliding_windows')) and size > 0, size, float(get('window_overlap')),
               float(get('window_nms_threshold')), float(get('window_join_score')),
               str(get('window_score')))
  if not 0.0 <= s.overlap < 1.0:
    raise ValueError(f'config.inference.window_overlap must be in [0, 1), got {s.overlap}')
  if s.score not in SCORES:
    raise ValueError(f'config.inference.window_score must be one of {SCORES}, got {s.score!r}')
  return s


def uses_windows(config, num_clips: int) -> bool:
  """True when a video of `num_clips` clips is predicted through sliding windows."""
  s = settings(config)
  return s.enabled and num_clips > s.size


def window_starts(num_clips: int, size: int, overlap: float) -> np.ndarray:
  """(W,) first clip of each window: a stride of round(size * (1 - overlap)) clips
  (at least 1), and a last window ending at the video's last clip, so every window
  has `size` real clips and every clip is in some window. num_clips <= size: [0]."""
  if num_clips <= size:
    return np.zeros(1, np.int64)
  stride = max(1, int(round(size * (1.0 - overlap))))
  starts = list(range(0, num_clips - size, stride))
  starts.append(num_clips - size)
  return np.asarray(starts, np.int64)


def cut_windows(video: np.ndarray, starts: np.ndarray, size: int,
                tef: bool) -> np.ndarray:
  """(L, D) clips -> (W, size, D) windows. With `tef`, the last 2 columns are the
  video's TEF and are rewritten per window as [i/size, (i+1)/size], as a video of
  `size` clips gets in training."""
  idx = np.asarray(starts)[:, None] + np.arange(size)[None]
  out = np.asarray(video, np.float32)[idx]
  if tef:
    st = np.arange(size, dtype=np.float32) / np.float32(size)
    out[:, :, -2] = st
    out[:, :, -1] = st + np.float32(1.0) / np.float32(size)
  return out


def spans_to_seconds(spans: np.ndarray, starts: np.ndarray, size: int,
                     clip_len: float) -> np.ndarray:
  """(W, N, 2) normalized (center, width) per window -> (W, N, 2) [start_s, end_s] in
  the whole video, each inside its window's time range."""
  spans = np.asarray(spans, np.float64)
  se = np.stack([spans[..., 0] - spans[..., 1] / 2, spans[..., 0] + spans[..., 1] / 2], -1)
  se = np.clip(se, 0.0, 1.0) * (size * clip_len)
  return se + (np.asarray(starts, np.float64) * clip_len)[:, None, None]


def _find(parent, i):
  while parent[i] != i:
    parent[i] = parent[parent[i]]
    i = parent[i]
  return i


def join_pairs(se: np.ndarray, score: np.ndarray, win: np.ndarray, win_se: np.ndarray,
               tol: float, min_score: float) -> list:
  """Pairs (a, b) of candidates to join: a moment cut by a window border.

  se: (K, 2) seconds; score: (K,); win: (K,) window of each candidate; win_se: (W, 2)
  each window's [start_s, end_s]. For a in window w and b in window w + 1, both
  scoring >= `min_score`, overlapping or touching, they are joined when
    - a runs into w's right border and b into w+1's left border (within `tol` s), or
    - one runs into the border and the other covers its part inside the shared
      region and continues past that border (the other window saw more of it).
  Greedy by the lower score of the pair, best first; a candidate is joined to at most
  one partner on each side, so a moment longer than a window chains across windows.
  """
  pairs = []
  for a in np.flatnonzero(score >= min_score):
    w = win[a]
    if w + 1 >= len(win_se):
      continue
    for b in np.flatnonzero((win == w + 1) & (score >= min_score)):
      if max(se[a, 0], se[b, 0]) > min(se[a, 1], se[b, 1]):
        continue               # disjoint
      right_a = se[a, 1] >= win_se[w, 1] - tol
      left_b = se[b, 0] <= win_se[w + 1, 0] + tol
      # b continues what w saw of a: covers a inside the shared region, ends beyond w.
      b_goes_on = (se[b, 0] <= max(se[a, 0], win_se[w + 1, 0]) + tol
                   and se[b, 1] >= win_se[w, 1] + tol)
      a_goes_on = (se[a, 1] >= min(se[b, 1], win_se[w, 1]) - tol
                   and se[a, 0] <= win_se[w + 1, 0] - tol)
      if (right_a and left_b) or (right_a and b_goes_on) or (left_b and a_goes_on):
        pairs.append((min(score[a], score[b]), int(a), int(b)))
  pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
  used_right, used_left, out = set(), set(), []
  for _, a, b in pairs:
    if a in used_right or b in used_left:
      continue
    used_right.add(a)
    used_left.add(b)
    out.append((a, b))
  return out


def join_groups(se: np.ndarray, score: np.ndarray, win: np.ndarray, win_se: np.ndarray,
                tol: float, min_score: float) -> list:
  """Candidates (K, 2) / (K,) -> groups (lists of candidate indices, in order of their
  first member): the candidates `join_pairs` joins, chained, form one group; every other
  candidate is a group of its own."""
  k = len(score)
  parent = list(range(k))
  for a, b in join_pairs(se, score, win, win_se, tol, min_score):
    parent[_find(parent, b)] = _find(parent, a)
  groups = {}
  for i in range(k):
    groups.setdefault(_find(parent, i), []).append(i)
  return sorted(groups.values())


def span_saliency(se: np.ndarray, saliency: np.ndarray, clip_len: float) -> np.ndarray:
  """(K, 2) seconds, (L,) clip saliency -> (K,) mean saliency of the clips each span
  touches (at least one clip)."""
  n = len(saliency)
  lo = np.clip(np.floor(se[:, 0] / clip_len + 1e-6).astype(np.int64), 0, n - 1)
  hi = np.clip(np.ceil(se[:, 1] / clip_len - 1e-6).astype(np.int64), lo + 1, n)
  csum = np.concatenate([[0.0], np.cumsum(np.asarray(saliency, np.float64))])
  return (csum[hi] - csum[lo]) / (hi - lo)


def merge_windows(spans: np.ndarray, scores: np.ndarray, starts: np.ndarray, size: int,
                  clip_len: float, duration: float, top_k: int, s: Settings,
                  round_to: float = 0.0, saliency: Optional[np.ndarray] = None) -> list:
  """One video's window outputs -> ranked `[start_s, end_s, score]` (best first).

  spans: (W, N, 2) normalized (center, width) per window; scores: (W, N) foreground
  probabilities; saliency: (L,) the video's clip saliency (`merge_saliency`), used
  when `s.score == 'saliency'`. Steps: seconds (`spans_to_seconds`), rounding to
  multiples of `round_to` (as `postprocess.windows_from_spans`), scores (x sigmoid of
  the span's mean saliency), joining across borders (tolerance one clip; a joined
  moment keeps its best member's probability, rescored on its whole span), clipping to
  [0, duration], temporal NMS (`s.nms_threshold`; < 0: none), top_k.
  """
  starts = np.asarray(starts, np.int64)
  w, n = np.asarray(scores).shape
  se = spans_to_seconds(spans, starts, size, clip_len).reshape(-1, 2)
  prob = np.asarray(scores, np.float64).reshape(-1)
  win = np.repeat(np.arange(w), n)
  win_se = np.stack([starts * clip_len, (starts + size) * clip_len], 1).astype(np.float64)
  if round_to > 0:
    se = np.round(se / round_to) * round_to
    win_se = np.round(win_se / round_to) * round_to
  use_sal = s.score == 'saliency' and saliency is not None
  rescore = ((lambda x, p: p / (1.0 + np.exp(-span_saliency(x, saliency, clip_len))))
             if use_sal else (lambda x, p: p))
  groups = join_groups(se, rescore(se, prob), win, win_se, clip_len, s.join_score)
  se = np.stack([[se[g, 0].min(), se[g, 1].max()] for g in groups]).reshape(-1, 2)
  score = rescore(se, np.asarray([prob[g].max() for g in groups]))
  se = np.clip(se, 0.0, duration)
  order = np.argsort(-score, kind='stable')
  wins = [[round(float(a), 4), round(float(b), 4), round(float(p), 4)]
          for (a, b), p in zip(se[order], score[order])]
  if s.nms_threshold >= 0:
    wins = postprocess.temporal_nms(wins, s.nms_threshold)
  return wins[:top_k]


def merge_saliency(saliency: np.ndarray, starts: np.ndarray, num_clips: int) -> np.ndarray:
  """(W, size) per-window clip saliency -> (num_clips,): each clip's mean over the
  windows that hold it."""
  saliency = np.asarray(saliency, np.float64)
  size = saliency.shape[1]
  total = np.zeros(num_clips)
  count = np.zeros(num_clips)
  for st, row in zip(np.asarray(starts), saliency):
    total[st:st + size] += row
    count[st:st + size] += 1
  return total / np.maximum(count, 1)


def with_defaults(config):
  """`config` with an `inference` block (DEFAULTS for missing keys): configs written
  before it existed take `--override=inference.KEY=...` too."""
  import ml_collections   # pylint: disable=g-import-not-at-top
  if 'inference' not in config:
    config.inference = ml_collections.ConfigDict()
  for k, v in DEFAULTS.items():
    if k not in config.inference:
      config.inference[k] = v
  return config
