"""Prediction over a whole split, metrics, and the workdir mode of `evaluate.py`."""
import json
import os
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from momentdiff_jax.common import atomic
from momentdiff_jax.data import dataset as dataset_lib
from momentdiff_jax.inference import postprocess
from momentdiff_jax.inference import sampling
from momentdiff_jax.inference import windows as windows_lib
from momentdiff_jax.inference import windows_eval
from momentdiff_jax.ops import diffusion
from momentdiff_jax.ops import metrics as metrics_lib
from momentdiff_jax.release import video_sources
from momentdiff_jax.run import checkpointing
from momentdiff_jax.run import mesh as mesh_lib
from momentdiff_jax.run import replicas as replicas_lib
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir as workdir_lib


def predict_split(sample_fn, params, config, dataset, split: str, mesh, rng,
                  with_trajectory: bool = False, max_trajectories: int = 0,
                  num_replicas: Optional[int] = None):
  """Runs the compiled sampler over every example of `split` exactly once.

  `sample_fn(params, video_feat, video_mask, query_feat, query_mask, rng)` is the jitted
  sampler; batches come from `dataset.eval_batches`. Returns (prediction rows in split
  order, trajectories dict index -> (S, N, 2) for the first `max_trajectories` examples).
  With `num_replicas` R, `sample_fn` is a replicated sampler (outputs with a leading
  (R,) axis), `rng` holds R keys, and both results are lists over the R replicas.
  """
  rows = dataset.rows(split)
  unit = postprocess.round_unit(config, dataset.info.get('clip_len') or config.data.get('clip_len'))
  n_rep = num_replicas or 1
  results = [{} for _ in range(n_rep)]
  trajectories = [{} for _ in range(n_rep)]
  shard, num_shards = mesh_lib.data_shard(mesh)
  inputs = ('video_feat', 'video_mask', 'query_feat', 'query_mask')
  meta_keys = ('index', 'num_clips', 'duration', 'span_seconds')
  for i, local in enumerate(dataset.eval_batches(split, config.eval_batch_size, shard,
                                                 num_shards)):
    batch = mesh_lib.global_batch({k: local[k] for k in inputs + meta_keys}, mesh)
    rng_i = (jax.vmap(jax.random.fold_in, in_axes=(0, None))(rng, i) if num_replicas
             else jax.random.fold_in(rng, i))
    out = sample_fn(params, *(batch[k] for k in inputs), rng_i)
    if not num_replicas:
      out = jax.tree.map(lambda x: x[None], out)
    # Global arrays: every process gets the whole batch, whatever the layout.
    out, meta = multihost_utils.process_allgather((out, {k: batch[k] for k in meta_keys}),
                                                  tiled=True)
    for r in range(n_rep):
      wins = postprocess.windows_from_spans(out['spans'][r], out['scores'][r], meta['span_seconds'],
                                meta['duration'], config.max_pred_windows,
                                config.nms_threshold, unit)
      for b, idx in enumerate(np.asarray(meta['index'])):
        if idx < 0:
          continue
        n = int(meta['num_clips'][b])
        results[r][int(idx)] = (wins[b], np.asarray(out['saliency'][r, b, :n]).round(4).tolist())
        if with_trajectory and len(trajectories[r]) < max_trajectories:
          trajectories[r][int(idx)] = np.asarray(out['trajectory'][r, :, b])
  # Videos longer than data.max_v_l, cut to their first max_v_l clips above: predicted
  # again through sliding windows (docs/long_videos.md).
  long = windows_eval.predict_long(sample_fn, params, config, dataset.data_dir, split, mesh,
                                   rng, unit, num_replicas)
  for r in range(n_rep):
    results[r].update(long[r])
    for i in long[r]:
      trajectories[r].pop(i, None)
  missing = [i for i in range(len(rows)) if i not in results[0]]
  if missing:
    raise RuntimeError(f'{len(missing)} examples of split {split!r} got no prediction')
  all_preds = []
  for res in results:
    preds = []
    for i, row in enumerate(rows):
      wins, sal = res[i]
      preds.append({'qid': row['qid'], 'query': row.get('query', ''), 'vid': row['vid'],
                    'pred_relevant_windows': wins, 'pred_saliency_scores': sal})
    all_preds.append(preds)
  if not num_replicas:
    return all_preds[0], trajectories[0]
  return all_preds, trajectories


def score(preds, dataset, split: str, dataset_name: str) -> Optional[dict]:
  """Standard metrics of `preds` against the split's annotations (None without labels)."""
  gt = dataset.rows(split)
  if not any(r.get('relevant_windows') for r in gt):
    return None
  clip_len = dataset.info.get('clip_len') or 2.0
  return metrics_lib.compute_metrics(preds, gt, dataset_name, clip_length=float(clip_len))


def write_outputs(out_dir: str, split: str, preds, metrics: Optional[dict]):
  """Writes `<split>_preds.jsonl` and `<split>_metrics.json` (process 0 only), each
  whole or not at all (`common.atomic`): an earlier evaluation's files stay intact
  until the new ones are complete."""
  if jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  atomic.write_jsonl(os.path.join(out_dir, f'{split}_preds.jsonl'), preds)
  if metrics is not None:
    atomic.write_json(os.path.join(out_dir, f'{split}_metrics.json'), metrics)


def write_replica_outputs(out_dir: str, split: str, preds: list, metrics: list, reps):
  """A multi-replica run's outputs: each replica's files under `out_dir/r<k>/`, and
  `<split>_metrics.json` with the mean, std and every replica (`replicas.aggregate`).
  Returns the aggregate (None without labels)."""
  for rep, p, m in zip(reps, preds, metrics):
    write_outputs(os.path.join(out_dir, f'r{rep.index}'), split, p, m)
  agg = replicas_lib.aggregate(metrics, reps)
  if agg is not None and jax.process_index() == 0:
    atomic.write_json(os.path.join(out_dir, f'{split}_metrics.json'), agg)
  return agg


def write_plots(out_dir: str, split: str, preds, rows, trajectories: dict) -> list[str]:
  """Fig. 4 (predicted vs GT start/end/length distributions) and Fig. 5 (trajectories)."""
  from momentdiff_jax.inference import plots  # matplotlib, only when figures are asked for
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
                     num_trajectories: int = 6, overrides: Optional[dict] = None,
                     replica='all') -> Optional[dict]:
  """`evaluate.py --workdir` mode: restore, predict `split`, score, write under eval/.

  `overrides` ({'data.dir': ..., 'eval_batch_size': '16'}) change the workdir's config
  for this evaluation; keys that fix the parameters, and a dataset whose feature dims
  differ from the workdir's, raise `workdir.ConfigMismatch` before anything runs.
  A multi-replica workdir: `replica='all'` predicts with every replica in one program
  (files per replica under eval/r<k>/, the mean / std / replicas JSON in eval/);
  `replica=k` evaluates replica k alone into eval/r<k>/.
  """
  config = windows_lib.with_defaults(checkpointing.load_config(workdir))
  if overrides:
    config = workdir_lib.apply_overrides(config, overrides)
  try:
    windows_lib.settings(config)     # a bad inference.* value, named before any compute
  except ValueError as e:
    raise workdir_lib.ConfigMismatch(str(e)) from None
  dataset = dataset_lib.open_dataset(config)
  workdir_lib.check_data_dims(config, dataset.info, dataset.data_dir)
  reps = replicas_lib.replicas(config)
  if len(reps) > 1 and str(replica) == 'all':
    return _evaluate_all_replicas(workdir, config, reps, dataset, split, checkpoint,
                                  sampling_steps, plots, num_trajectories)
  index = None if len(reps) == 1 or str(replica) == 'all' else int(replica)
  mesh = mesh_lib.make_mesh()
  config, model, params, step, used = workdir_lib.restore_model(
      workdir, checkpoint, mesh_lib.replicated(mesh), config, index)
  # Weights trained on another order of the same feature sources read this dataset's.
  params = video_sources.align_to_dataset(config, params, dataset.info, log=_print0)
  steps = int(sampling_steps or config.diffusion.sampling_steps)
  sample_fn = jax.jit(sampling.make_sample_fn(model, config, diffusion.make_schedule(config.diffusion),
                                        steps, return_trajectory=plots))
  preds, trajectories = predict_split(sample_fn, params, config, dataset, split, mesh,
                                      workdir_lib.eval_rng(config.seed),
                                      with_trajectory=plots, max_trajectories=num_trajectories)
  metrics = score(preds, dataset, split, config.data.name)
  out_dir = os.path.join(workdir, 'eval', '' if index is None else f'r{index}')
  write_outputs(out_dir, split, preds, metrics)
  if jax.process_index() == 0:
    who = '' if index is None else f'replica {index} (seed {config.seed}), '
    print(f'{split}: {len(preds)} queries, {who}{used} checkpoint (step {step}), '
          f'{steps} sampling steps -> {out_dir}')
    if metrics is not None:
      print(json.dumps(metrics['brief'], indent=1))
    if plots:
      for p in write_plots(out_dir, split, preds, dataset.rows(split), trajectories):
        print(f'wrote {p}')
  return metrics


def _evaluate_all_replicas(workdir, config, reps, dataset, split, checkpoint, sampling_steps,
                           plots, num_trajectories) -> Optional[dict]:
  mesh = mesh_lib.make_mesh(len(reps))
  rsh = mesh_lib.replica_sharding(mesh)
  params, steps_used, used = workdir_lib.restore_replicas(workdir, checkpoint, config, rsh)
  params = video_sources.align_to_dataset(config, params, dataset.info, log=_print0,
                                          stacked=True)
  model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
  steps = int(sampling_steps or config.diffusion.sampling_steps)
  hp = jax.device_put(replicas_lib.hparams(config), rsh)
  sample = sampling.make_replica_sample_fn(model, config, diffusion.make_schedule(config.diffusion),
                                     steps, return_trajectory=plots)
  sample_fn = jax.jit(lambda p, vf, vm, qf, qm, rng: sample(p, vf, vm, qf, qm, rng, hp))
  preds, trajectories = predict_split(
      sample_fn, params, config, dataset, split, mesh,
      jax.device_put(replicas_lib.replica_keys(config, 2), rsh), with_trajectory=plots,
      max_trajectories=num_trajectories, num_replicas=len(reps))
  metrics = [score(p, dataset, split, config.data.name) for p in preds]
  out_dir = os.path.join(workdir, 'eval')
  agg = write_replica_outputs(out_dir, split, preds, metrics, reps)
  if jax.process_index() == 0:
    print(f'{split}: {len(preds[0])} queries, {len(reps)} replicas, {used[0]} checkpoints '
          f'(steps {steps_used}), {steps} sampling steps -> {out_dir}')
    if agg is not None:
      print('mean ± std over replicas: ' + replicas_lib.format_mean_std(agg['brief'],
                                                                        agg['brief_std']))
      print(json.dumps({'brief': agg['brief'], 'brief_std': agg['brief_std']}, indent=1))
    if plots:
      for rep, p, t in zip(reps, preds, trajectories):
        for path in write_plots(os.path.join(out_dir, f'r{rep.index}'), split, p,
                                dataset.rows(split), t):
          print(f'wrote {path}')
  return agg
