"""Spans -> windows in seconds: denormalize, clip to the video, round to clips, NMS.

Host-side numpy (the outputs are ragged lists), applied after the compiled sampler.
"""
from typing import Optional

import numpy as np


def round_unit(config, clip_len: Optional[float]) -> float:
  """Seconds that window boundaries are rounded to (0: no rounding).

  The release rounds start and end to multiples of the clip length after clamping
  (momentdiff/postprocessing_momentdiff.py, `round_to_multiple_clip_lengths`, with the
  clip length inference.py passes per dataset). `config.round_windows=False` turns it
  off; `config.round_seconds > 0` sets the unit (e.g. TACoS: the release rounds to 2 s
  although its features are pooled), else the data's clip length; none known: no rounding.
  """
  if not config.get('round_windows', True):
    return 0.0
  unit = float(config.get('round_seconds', 0.0) or 0.0)
  return unit if unit > 0 else float(clip_len or 0.0)


def windows_from_spans(spans: np.ndarray, scores: np.ndarray, span_seconds: np.ndarray,
                       duration: np.ndarray, top_k: int, nms_threshold: float = -1.0,
                       round_to: float = 0.0) -> list[list[list[float]]]:
  """Normalized (center, width) spans -> ranked `[start_s, end_s, score]` lists.

  spans: (B, N, 2); scores: (B, N); span_seconds, duration: (B,). Spans are normalized
  by the seconds of the clips the model saw (`span_seconds`), then clipped to the
  duration; with `round_to` > 0, start and end are rounded to its multiples (half to
  even, as torch.round) and clipped to the duration again, so a window never leaves
  the video (the release clamps to [0, 150] s instead).
  """
  spans = np.asarray(spans, np.float64)
  se = np.stack([spans[..., 0] - spans[..., 1] / 2, spans[..., 0] + spans[..., 1] / 2], -1)
  length = np.asarray(span_seconds, np.float64)[:, None, None]
  dur = np.asarray(duration, np.float64)[:, None, None]
  se = np.clip(se * length, 0.0, dur)
  if round_to > 0:
    se = np.clip(np.round(se / round_to) * round_to, 0.0, dur)
  order = np.argsort(-scores, axis=1, kind='stable')
  se = np.take_along_axis(se, order[..., None], axis=1)
  sc = np.take_along_axis(scores, order, axis=1)
  out = []
  for b in range(se.shape[0]):
    wins = [[round(float(s), 4), round(float(e), 4), round(float(p), 4)]
            for (s, e), p in zip(se[b], sc[b])]
    if nms_threshold >= 0:
      wins = temporal_nms(wins, nms_threshold)
    out.append(wins[:top_k])
  return out


def temporal_nms(windows: list[list[float]], threshold: float) -> list[list[float]]:
  """Greedy NMS over windows sorted best first: drops those with IoU > threshold."""
  kept = []
  for w in windows:
    ok = True
    for k in kept:
      inter = max(0.0, min(w[1], k[1]) - max(w[0], k[0]))
      union = max(w[1], k[1]) - min(w[0], k[0])
      if union > 0 and inter / union > threshold:
        ok = False
        break
    if ok:
      kept.append(w)
  return kept
