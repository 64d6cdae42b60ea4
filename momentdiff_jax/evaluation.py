"""Prediction over a whole split, metrics, and the workdir mode of `evaluate.py`."""
import json
import os
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from momentdiff_jax import metrics as metrics_lib


def windows_from_spans(spans: np.ndarray, scores: np.ndarray, num_clips: np.ndarray,
                       clip_len: float, duration: np.ndarray, top_k: int,
                       nms_threshold: float = -1.0) -> list[list[list[float]]]:
  """Normalized (center, width) spans -> ranked `[start_s, end_s, score]` lists.

  spans: (B, N, 2); scores: (B, N); num_clips, duration: (B,). Spans are normalized
  by the clips the model saw (`num_clips * clip_len`), then clipped to the duration.
  """
  spans = np.asarray(spans, np.float64)
  se = np.stack([spans[..., 0] - spans[..., 1] / 2, spans[..., 0] + spans[..., 1] / 2], -1)
  length = (num_clips * clip_len)[:, None, None]
  se = np.clip(se * length, 0.0, duration[:, None, None])
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


def predict_split(sample_fn, params, config, dataset, split: str, mesh, rng,
                  with_trajectory: bool = False, max_trajectories: int = 0):
  """Runs the compiled sampler over every example of `split` exactly once.

  `sample_fn(params, video_feat, video_mask, query_feat, query_mask, rng)` is the jitted
  sampler; batches come from `dataset.eval_batches`. Returns (prediction rows in split
  order, trajectories dict index -> (S, N, 2) for the first `max_trajectories` examples).
  """
  from momentdiff_jax import mesh as mesh_lib
  rows = dataset.rows(split)
  results = {}
  trajectories = {}
  for i, local in enumerate(dataset.eval_batches(split, config.eval_batch_size,
                                                 jax.process_index(), jax.process_count())):
    batch = mesh_lib.global_batch(
        {k: local[k] for k in ('video_feat', 'video_mask', 'query_feat', 'query_mask')}, mesh)
    out = sample_fn(params, batch['video_feat'], batch['video_mask'], batch['query_feat'],
                    batch['query_mask'], jax.random.fold_in(rng, i))
    out = multihost_utils.process_allgather(out, tiled=True)
    meta = multihost_utils.process_allgather(
        {k: local[k] for k in ('index', 'num_clips', 'duration')}, tiled=True)
    wins = windows_from_spans(out['spans'], out['scores'], meta['num_clips'],
                              dataset.info['clip_len'], meta['duration'],
                              config.max_pred_windows, config.nms_threshold)
    for b, idx in enumerate(np.asarray(meta['index'])):
      if idx < 0:
        continue
      n = int(meta['num_clips'][b])
      results[int(idx)] = (wins[b], np.asarray(out['saliency'][b, :n]).round(4).tolist())
      if with_trajectory and len(trajectories) < max_trajectories:
        trajectories[int(idx)] = np.asarray(out['trajectory'][:, b])
  missing = [i for i in range(len(rows)) if i not in results]
  if missing:
    raise RuntimeError(f'{len(missing)} examples of split {split!r} got no prediction')
  preds = []
  for i, row in enumerate(rows):
    wins, sal = results[i]
    preds.append({'qid': row['qid'], 'query': row.get('query', ''), 'vid': row['vid'],
                  'pred_relevant_windows': wins, 'pred_saliency_scores': sal})
  return preds, trajectories


def score(preds, dataset, split: str, dataset_name: str) -> Optional[dict]:
  """Standard metrics of `preds` against the split's annotations (None without labels)."""
  gt = dataset.rows(split)
  if not any(r.get('relevant_windows') for r in gt):
    return None
  return metrics_lib.compute_metrics(preds, gt, dataset_name)


def write_outputs(out_dir: str, split: str, preds, metrics: Optional[dict]):
  """Writes `<split>_preds.jsonl` and `<split>_metrics.json` (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f'{split}_preds.jsonl'), 'w') as f:
    for p in preds:
      f.write(json.dumps(p) + '\n')
  if metrics is not None:
    with open(os.path.join(out_dir, f'{split}_metrics.json'), 'w') as f:
      json.dump(metrics, f, indent=2)
