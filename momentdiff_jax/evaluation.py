"""Prediction over a whole split, metrics, and the workdir mode of `evaluate.py`."""
import json
import os
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from momentdiff_jax import checkpointing
from momentdiff_jax import diffusion
from momentdiff_jax import mesh as mesh_lib
from momentdiff_jax import metrics as metrics_lib
from momentdiff_jax import train_step as ts
from momentdiff_jax import video_sources
from momentdiff_jax import workdir as workdir_lib
from momentdiff_jax.data import dataset as dataset_lib


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


def predict_split(sample_fn, params, config, dataset, split: str, mesh, rng,
                  with_trajectory: bool = False, max_trajectories: int = 0):
  """Runs the compiled sampler over every example of `split` exactly once.

  `sample_fn(params, video_feat, video_mask, query_feat, query_mask, rng)` is the jitted
  sampler; batches come from `dataset.eval_batches`. Returns (prediction rows in split
  order, trajectories dict index -> (S, N, 2) for the first `max_trajectories` examples).
  """
  rows = dataset.rows(split)
  unit = round_unit(config, dataset.info.get('clip_len') or config.data.get('clip_len'))
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
        {k: local[k] for k in ('index', 'num_clips', 'duration', 'span_seconds')}, tiled=True)
    wins = windows_from_spans(out['spans'], out['scores'], meta['span_seconds'],
                              meta['duration'], config.max_pred_windows,
                              config.nms_threshold, unit)
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
  clip_len = dataset.info.get('clip_len') or 2.0
  return metrics_lib.compute_metrics(preds, gt, dataset_name, clip_length=float(clip_len))


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


def write_plots(out_dir: str, split: str, preds, rows, trajectories: dict) -> list[str]:
  """Fig. 4 (predicted vs GT start/end/length distributions) and Fig. 5 (trajectories)."""
  from momentdiff_jax import plots  # matplotlib, only when figures are asked for
  pred_norm, gt_norm = [], []
  for p, r in zip(preds, rows):
    dur = float(r['duration'])
    if p['pred_relevant_windows']:
      pred_norm.append(np.asarray(p['pred_relevant_windows'][0][:2]) / dur)
    gt_norm.extend(np.asarray(w, np.float64) / dur for w in r.get('relevant_windows') or [])
  paths = []
  if gt_norm:
    paths.append(plots.plot_distributions(
        np.stack(pred_norm), np.stack(gt_norm),
        os.path.join(out_dir, f'{split}_distributions.png'),
        title=f'{split}: top-1 predictions vs ground truth ({len(preds)} queries)'))
  if trajectories:
    idx = sorted(trajectories)
    gts = [np.asarray(rows[i].get('relevant_windows') or np.zeros((0, 2)), np.float64).reshape(-1, 2)
           / float(rows[i]['duration']) for i in idx]
    titles = [f'"{rows[i].get("query", "")[:48]}"' for i in idx]
    paths.append(plots.plot_trajectory_grid(
        [trajectories[i] for i in idx], gts, os.path.join(out_dir, f'{split}_trajectories.png'),
        titles=titles, suptitle='Diffusion trajectories of the N_r spans over DDIM steps'))
  return paths


def _print0(msg: str):
  if jax.process_index() == 0:
    print(msg, flush=True)


def evaluate_workdir(workdir: str, split: str = 'test', checkpoint: str = 'best',
                     sampling_steps: Optional[int] = None, plots: bool = False,
                     num_trajectories: int = 6,
                     overrides: Optional[dict] = None) -> Optional[dict]:
  """`evaluate.py --workdir` mode: restore, predict `split`, score, write under eval/.

  `overrides` ({'data.dir': ..., 'eval_batch_size': '16'}) change the workdir's config
  for this evaluation; keys that fix the parameters, and a dataset whose feature dims
  differ from the workdir's, raise `workdir.ConfigMismatch` before anything runs.
  """
  config = checkpointing.load_config(workdir)
  if overrides:
    config = workdir_lib.apply_overrides(config, overrides)
  dataset = dataset_lib.open_dataset(config)
  workdir_lib.check_data_dims(config, dataset.info, dataset.data_dir)
  mesh = mesh_lib.make_mesh()
  config, model, params, step, used = workdir_lib.restore_model(
      workdir, checkpoint, mesh_lib.replicated(mesh), config)
  # Weights trained on another order of the same feature sources read this dataset's.
  params = video_sources.align_to_dataset(config, params, dataset.info, log=_print0)
  steps = int(sampling_steps or config.diffusion.sampling_steps)
  sample_fn = jax.jit(ts.make_sample_fn(model, config, diffusion.make_schedule(config.diffusion),
                                        steps, return_trajectory=plots))
  preds, trajectories = predict_split(sample_fn, params, config, dataset, split, mesh,
                                      workdir_lib.eval_rng(config.seed),
                                      with_trajectory=plots, max_trajectories=num_trajectories)
  metrics = score(preds, dataset, split, config.data.name)
  out_dir = os.path.join(workdir, 'eval')
  write_outputs(out_dir, split, preds, metrics)
  if jax.process_index() == 0:
    print(f'{split}: {len(preds)} queries, {used} checkpoint (step {step}), '
          f'{steps} sampling steps -> {out_dir}')
    if metrics is not None:
      print(json.dumps(metrics['brief'], indent=1))
    if plots:
      for p in write_plots(out_dir, split, preds, dataset.rows(split), trajectories):
        print(f'wrote {p}')
  return metrics
