"""Figures of `evaluate.py --plots` (matplotlib, headless Agg backend).

* `plot_distributions`: predicted vs GT histograms of normalized start, end and length
  (the paper's Fig. 4: how well the predictions follow the annotation's location bias).
* `plot_trajectories` / `plot_trajectory_grid`: the N_r spans of the diffusion sampler
  at every step against the GT windows (the paper's Fig. 5).
* `plot_video_timeline`: one video and query (`predict.py --plot`): a strip of frames,
  the predicted windows with their scores, and the clip saliency, on one time axis.

All windows are normalized by the video duration, so every axis runs over [0, 1].
"""
import os
from typing import Optional, Sequence

import matplotlib
matplotlib.use('Agg')  # no display on training machines
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

PRED_COLOR = '#1f77b4'
GT_COLOR = '#2ca02c'
TRAJ_GT_COLOR = '0.25'  # gray: stays apart from every span color
# tab10 without its green and gray, which read like the GT.
_SPAN_COLORS = ('#1f77b4', '#ff7f0e', '#d62728', '#9467bd', '#8c564b', '#e377c2',
                '#bcbd22', '#17becf')
_DPI = 110


def _as_windows(x) -> np.ndarray:
  return np.asarray(x, np.float64).reshape(-1, 2)


def _save(fig, path: str):
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=_DPI, bbox_inches='tight')
  plt.close(fig)


def plot_distributions(pred_windows_norm, gt_windows_norm, path: str,
                       title: Optional[str] = None, bins: int = 20) -> str:
  """Three histograms (start, end, length) of predicted vs GT windows.

  Args:
    pred_windows_norm: (N, 2) predicted (start, end) / duration, e.g. the top-1 window
      of every query.
    gt_windows_norm: (M, 2) GT (start, end) / duration.
    path: PNG to write.
    title: figure title (default names the counts).
    bins: histogram bins over [0, 1].
  Returns:
    path.
  """
  pred = _as_windows(pred_windows_norm)
  gt = _as_windows(gt_windows_norm)
  edges = np.linspace(0.0, 1.0, bins + 1)
  panels = (('start', 0), ('end', 1), ('length', None))
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  for ax, (name, col) in zip(axes, panels):
    values = []
    for w in (pred, gt):
      v = w[:, 1] - w[:, 0] if col is None else w[:, col]
      values.append(np.clip(v, 0.0, 1.0))  # out-of-range values land in edge bins
    # Densities, not counts: prediction and GT sets may differ in size.
    ax.hist(values[1], bins=edges, density=True, color=GT_COLOR, alpha=0.45,
            label=f'ground truth (n={len(gt)})')
    ax.hist(values[0], bins=edges, density=True, histtype='step', linewidth=2,
            color=PRED_COLOR, label=f'prediction (n={len(pred)})')
    for v, color in ((values[1], GT_COLOR), (values[0], PRED_COLOR)):
      if len(v):
        ax.axvline(np.mean(v), color=color, linestyle='--', linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f'normalized {name} ({name} / video duration)')
    ax.set_ylabel('density')
    ax.set_title(f'moment {name}')
    ax.grid(alpha=0.3)
  axes[0].legend(loc='upper right', fontsize=8, title='dashed: mean',
                 title_fontsize=8)
  fig.suptitle(title or 'Predicted vs ground-truth moment distributions')
  fig.tight_layout()
  _save(fig, path)
  return path


def _draw_trajectory(ax, trajectory, gt_windows, scores=None, legend=True):
  """One query on `ax`: x = sampling step, y = normalized time."""
  traj = np.asarray(trajectory, np.float64)  # (S, N, 2) as (center, width)
  s_count, n_spans = traj.shape[:2]
  start = np.clip(traj[..., 0] - traj[..., 1] / 2, 0.0, 1.0)
  end = np.clip(traj[..., 0] + traj[..., 1] / 2, 0.0, 1.0)
  steps = np.arange(1, s_count + 1)
  for k, (gs, ge) in enumerate(_as_windows(gt_windows)):
    ax.axhspan(gs, ge, facecolor=TRAJ_GT_COLOR, alpha=0.15, hatch='//',
               edgecolor=TRAJ_GT_COLOR, label='ground truth' if k == 0 else None)
    for y in (gs, ge):
      ax.axhline(y, color=TRAJ_GT_COLOR, linewidth=1.5, linestyle='--')
  best = int(np.argmax(scores)) if scores is not None else -1
  for i in range(n_spans):
    c = _SPAN_COLORS[i % len(_SPAN_COLORS)]
    label = f'span {i + 1}'
    if scores is not None:
      label += f' (score {float(scores[i]):.2f})' + (' best' if i == best else '')
    lw = 2.6 if i == best else 1.3
    ax.fill_between(steps, start[:, i], end[:, i], color=c, alpha=0.12)
    ax.plot(steps, start[:, i], color=c, linewidth=lw, label=label)
    ax.plot(steps, end[:, i], color=c, linewidth=lw)
    ax.plot(steps[-1], start[-1, i], 'v', color=c, markersize=5)
    ax.plot(steps[-1], end[-1, i], '^', color=c, markersize=5)
  ax.set_xlim(0.8, s_count + 0.2)
  ax.set_ylim(0, 1)
  ax.set_xlabel('sampling step (noise \u2192 final)')
  ax.set_ylabel('normalized time (start / end)')
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8,
              title='band = [start, end]', title_fontsize=8)


def plot_trajectories(trajectory, gt_windows, path: str,
                      title: Optional[str] = None, scores=None) -> str:
  """Diffusion trajectories of one query's spans against its GT.

  Args:
    trajectory: (S, N, 2) predicted spans (center, width), normalized, per sampling
      step (step 1 = first denoising step, S = final prediction).
    gt_windows: (K, 2) normalized GT (start, end).
    path: PNG to write.
    title: e.g. the query text.
    scores: optional (N,) final confidences; the best span is drawn thicker.
  Returns:
    path.
  """
  fig, ax = plt.subplots(figsize=(9, 4.5))
  _draw_trajectory(ax, trajectory, gt_windows, scores)
  ax.set_title(title or 'Diffusion trajectories of the predicted spans')
  fig.tight_layout()
  _save(fig, path)
  return path


def plot_trajectory_grid(trajectories: Sequence, gt_windows: Sequence, path: str,
                         titles: Optional[Sequence[str]] = None,
                         scores: Optional[Sequence] = None, ncols: int = 2,
                         suptitle: Optional[str] = None) -> str:
  """Several queries' trajectories (lists of (S, N, 2) and (K, 2)), one per panel."""
  n = len(trajectories)
  if n == 0:
    raise ValueError('no trajectory to plot')
  ncols = max(1, min(ncols, n))
  nrows = -(-n // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, 3.8 * nrows),
                           squeeze=False)
  for i, ax in enumerate(axes.flat):
    if i >= n:
      ax.axis('off')
      continue
    _draw_trajectory(ax, trajectories[i], gt_windows[i],
                     None if scores is None else scores[i])
    title = titles[i] if titles is not None else f'query {i + 1}'
    ax.set_title(title if len(title) <= 70 else title[:67] + '...', fontsize=10)
  fig.suptitle(suptitle or 'Diffusion trajectories of the N_r spans vs ground truth')
  fig.tight_layout()
  _save(fig, path)
  return path


def plot_video_timeline(path: str, frames: Sequence[np.ndarray], frame_times: Sequence[float],
                        duration: float, windows, saliency: Sequence[float],
                        clip_len: float, title: str = '') -> str:
  """Frames strip, predicted windows (best first, score in the label) and saliency.

  Args:
    frames: (h, w, 3) uint8 thumbnails shown at `frame_times` (seconds).
    windows: [[start_s, end_s, score], ...] best first.
    saliency: one score per clip of `clip_len` seconds.
  """
  windows = np.asarray(windows, np.float64).reshape(-1, 3)
  fig, axes = plt.subplots(3, 1, figsize=(10, 4.6), sharex=True,
                           gridspec_kw={'height_ratios': [1.3, 1.2, 1.0]})
  ax = axes[0]
  n = max(len(frames), 1)
  for img, t in zip(frames, frame_times):
    half = duration / n / 2
    ax.imshow(img, extent=(t - half, t + half, 0, 1), aspect='auto')
  ax.set_yticks([])
  ax.set_title(title, fontsize=10)
  ax = axes[1]
  for i, (s, e, sc) in enumerate(windows):
    color = _SPAN_COLORS[i % len(_SPAN_COLORS)]
    ax.barh(i, e - s, left=s, height=0.7, color=color, alpha=0.85 if i == 0 else 0.5)
    ax.text(e, i, f' {sc:.2f}', va='center', fontsize=7)
  ax.set_yticks(range(len(windows)), [f'#{i + 1}' for i in range(len(windows))], fontsize=7)
  ax.set_ylim(len(windows) - 0.4, -0.6)
  ax.set_ylabel('windows')
  ax = axes[2]
  sal = np.asarray(saliency, np.float64)
  ax.bar((np.arange(len(sal)) + 0.5) * clip_len, sal, width=clip_len * 0.9, color=PRED_COLOR)
  ax.set_ylabel('saliency')
  ax.set_xlabel('time (s)')
  ax.set_xlim(0, duration)
  _save(fig, path)
  return path
