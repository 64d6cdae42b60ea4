"""Prediction over a whole split, metrics and output files of R >= 1 replicas, and the
workdir mode of `evaluate.py`.

Everything here takes a run's replicas stacked on a leading (R,) axis (R = 1 for a
single run); only the files keep the one-replica layout of a single run
(`write_outputs`: `eval/<split>_*` rather than `eval/r0/`).
"""
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
from momentdiff_jax.run import workdir as workdir_lib


def make_sampler(model, config, steps: int, hparams: dict, return_trajectory: bool = False):
  """The jitted sampler of a run's replicas with their swept values bound:
  `(params (R, ...), video_feat, video_mask, query_feat, query_mask, rngs (R,)) ->
  {'spans', 'scores', 'saliency'[, 'trajectory']}`, each with a leading (R,) axis."""
  sample = sampling.make_sample_fn(model, config, diffusion.make_schedule(config.diffusion),
                                   steps, return_trajectory)
  return jax.jit(lambda p, vf, vm, qf, qm, rngs: sample(p, vf, vm, qf, qm, rngs, hparams))


def predict_split(sample_fn, params, config, dataset, split: str, mesh, rngs,
                  with_trajectory: bool = False, max_trajectories: int = 0):
  """Runs the compiled sampler of R replicas over every example of `split` once.

  `sample_fn` is `make_sampler`'s, `params` the (R, ...)-stacked params and `rngs` the
  (R,) keys (batch i samples with `fold_in(rngs[r], i)`); batches come from
  `dataset.eval_batches`. Returns (prediction rows in split order, trajectories dict
  index -> (S, N, 2) for the first `max_trajectories` examples), each a list over
  the R replicas.
  """
  rows = dataset.rows(split)
  unit = postprocess.round_unit(config, dataset.info.get('clip_len') or config.data.get('clip_len'))
  n_rep = len(rngs)
  results = [{} for _ in range(n_rep)]
  trajectories = [{} for _ in range(n_rep)]
  shard, num_shards = mesh_lib.data_shard(mesh)
  inputs = ('video_feat', 'video_mask', 'query_feat', 'query_mask')
  meta_keys = ('index', 'num_clips', 'duration', 'span_seconds')
  for i, local in enumerate(dataset.eval_batches(split, config.eval_batch_size, shard,
                                                 num_shards)):
    batch = mesh_lib.global_batch({k: local[k] for k in inputs + meta_keys}, mesh)
    rng_i = jax.vmap(jax.random.fold_in, in_axes=(0, None))(rngs, i)
    out = sample_fn(params, *(batch[k] for k in inputs), rng_i)
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
                                   rngs, unit)
  for r in range(n_rep):
    results[r].update(long[r])
    for i in long[r]:
      trajectories[r].pop(i, None)
  missing = [i for i in range(len(rows)) if i not in results[0]]
  if missing:
    raise RuntimeError(f'{len(missing)} examples of split {split!r} got no prediction')
  preds = [[{'qid': row['qid'], 'query': row.get('query', ''), 'vid': row['vid'],
             'pred_relevant_windows': res[i][0], 'pred_saliency_scores': res[i][1]}
            for i, row in enumerate(rows)] for res in results]
  return preds, trajectories


def score(preds, dataset, split: str, dataset_name: str) -> Optional[dict]:
  """Standard metrics of `preds` against the split's annotations (None without labels)."""
  gt = dataset.rows(split)
  if not any(r.get('relevant_windows') for r in gt):
    return None
  clip_len = dataset.info.get('clip_len') or 2.0
  return metrics_lib.compute_metrics(preds, gt, dataset_name, clip_length=float(clip_len))


def replica_dir(out_dir: str, index: int, num_replicas: int) -> str:
  """Where replica `index` of a run of `num_replicas` writes its files: `out_dir` for a
  one-replica run, else `out_dir/r<index>/`."""
  name = checkpointing.disk_replica(index, num_replicas)
  return out_dir if name is None else os.path.join(out_dir, f'r{name}')


def write_outputs(out_dir: str, split: str, preds: list, metrics: list, reps: list,
                  num_replicas: int) -> Optional[dict]:
  """Writes each replica's `<split>_preds.jsonl` and `<split>_metrics.json` under
  `replica_dir` (process 0 only) and, for several replicas, their aggregate as
  `out_dir/<split>_metrics.json`. `reps` are the replicas predicted (all of the run's
  `num_replicas`, or one). Each file is written whole or not at all (`common.atomic`):
  an earlier evaluation's files stay intact until the new ones are complete. Returns
  `replicas.aggregate` (None without labels)."""
  summary = replicas_lib.aggregate(metrics, reps)
  if jax.process_index() != 0:
    return summary
  for rep, p, m in zip(reps, preds, metrics):
    d = replica_dir(out_dir, rep.index, num_replicas)
    os.makedirs(d, exist_ok=True)
    atomic.write_jsonl(os.path.join(d, f'{split}_preds.jsonl'), p)
    if m is not None:
      atomic.write_json(os.path.join(d, f'{split}_metrics.json'), m)
  if len(reps) > 1 and summary is not None:
    atomic.write_json(os.path.join(out_dir, f'{split}_metrics.json'), summary)
  return summary


def result_line(split: str, used: list, summary: dict) -> str:
  """A split's result for the log: one replica's brief as JSON, several replicas'
  mean ± std."""
  which = used[0].split('_')[0]     # best_r<k> -> best
  if 'brief_std' not in summary:
    return f'{split} ({which} checkpoint): ' + json.dumps(summary['brief'])
  return (f'{split} ({which} checkpoints, mean ± std over {len(used)} replicas): '
          + replicas_lib.format_mean_std(summary['brief'], summary['brief_std']))


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
  `replica='all'` predicts with every replica of the run in one program (several
  replicas: files per replica under eval/r<k>/, the mean / std / replicas JSON in
  eval/); `replica=k` evaluates replica k alone (into eval/r<k>/ in a multi-replica
  workdir). Returns the written summary (`replicas.aggregate`; None without labels).
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
  run = workdir_lib.restore(workdir, checkpoint, config, replica)
  mesh = mesh_lib.make_mesh(len(run.reps))
  rsh = mesh_lib.replica_sharding(mesh)
  params = workdir_lib.place(run.params, rsh)
  # Weights trained on another order of the same feature sources read this dataset's.
  params = video_sources.align_to_dataset(run.config, params, dataset.info, log=_print0,
                                          stacked=True)
  steps = int(sampling_steps or run.config.diffusion.sampling_steps)
  hp = jax.device_put(replicas_lib.hparams(run.config), rsh)
  sample_fn = make_sampler(run.model, run.config, steps, hp, return_trajectory=plots)
  preds, trajectories = predict_split(
      sample_fn, params, run.config, dataset, split, mesh,
      jax.device_put(replicas_lib.replica_keys(run.config, 2), rsh),
      with_trajectory=plots, max_trajectories=num_trajectories)
  metrics = [score(p, dataset, split, run.config.data.name) for p in preds]
  out_dir = os.path.join(workdir, 'eval')
  n = replicas_lib.num_replicas(config)
  summary = write_outputs(out_dir, split, preds, metrics, run.reps, n)
  if jax.process_index() == 0:
    _print_evaluation(split, len(preds[0]), run, n, steps, out_dir, summary)
    for rep, p, t in zip(run.reps, preds, trajectories) if plots else ():
      for path in write_plots(replica_dir(out_dir, rep.index, n), split, p,
                              dataset.rows(split), t):
        print(f'wrote {path}')
  return summary


def _print_evaluation(split, num_queries, run, num_replicas, steps, out_dir, summary):
  """What evaluate.py prints: what was evaluated, then the brief (with the std over
  several replicas)."""
  rep = run.reps[0]
  if len(run.reps) > 1:
    what = f'{len(run.reps)} replicas, {run.used[0]} checkpoints (steps {run.steps})'
  else:
    who = f'replica {rep.index} (seed {rep.seed}), ' if num_replicas > 1 else ''
    what = f'{who}{run.used[0]} checkpoint (step {run.steps[0]})'
  print(f'{split}: {num_queries} queries, {what}, {steps} sampling steps -> {out_dir}')
  if summary is None:
    return
  if 'brief_std' in summary:
    print('mean ± std over replicas: ' + replicas_lib.format_mean_std(summary['brief'],
                                                                      summary['brief_std']))
    print(json.dumps({'brief': summary['brief'], 'brief_std': summary['brief_std']}, indent=1))
  else:
    print(json.dumps(summary['brief'], indent=1))
