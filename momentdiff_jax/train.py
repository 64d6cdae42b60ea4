"""The training loop: `train_and_evaluate(config, workdir)`.

One jit-compiled update of R replicas (`replicas.py`: `num_seeds` seeds x the sweep
grid; R = 1 by default) over a `(replica, data)` mesh (batch sharded on `data` and
shared by the replicas, replica-stacked state sharded on `replica` and donated),
periodic validation, orbax checkpoints (latest for resume, best by val MR-full-mAP per
replica), metrics.jsonl written by process 0 only (means over replicas, and per replica
under `r<k>/` when R > 1). Rerunning on the same workdir resumes from the latest
checkpoint: params, optimizer, step and the data iterator are restored, and the
per-step RNG is `fold_in(seed, step)`, so a resumed run reproduces an uninterrupted one.
"""
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from momentdiff_jax import evaluation
from momentdiff_jax.common import atomic
from momentdiff_jax.common import recipes
from momentdiff_jax.data import dataset as dataset_lib
from momentdiff_jax.inference import sampling
from momentdiff_jax.ops import diffusion
from momentdiff_jax.run import checkpointing
from momentdiff_jax.run import mesh as mesh_lib
from momentdiff_jax.run import replicas as replicas_lib
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir as workdir_lib

# Moved to `workdir`; these names stay for callers written against train.
create_model = workdir_lib.create_model
init_params = workdir_lib.init_params
eval_rng = workdir_lib.eval_rng
restore_model = workdir_lib.restore_model


class MetricsWriter:
  """JSON lines (one object per line with `step`), process 0 only; optional TensorBoard."""

  def __init__(self, workdir: str, resume_step: int, tensorboard: bool):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.tb = None
    if not self.active:
      return
    if os.path.exists(self.path):
      # Rows past the restored step come from a run that died before its next
      # checkpoint, and the final report is redone at the end: the resumed run writes
      # them again.
      with open(self.path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
      atomic.write_jsonl(self.path, [r for r in rows if r['step'] <= resume_step
                                     and not any(k.startswith('final_') for k in r)])
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError as e:
        raise ImportError('config.tensorboard=True needs tensorboardX: '
                          'pip install tensorboardX') from e
      self.tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: dict):
    if not self.active:
      return
    row = {'step': int(step)}
    # None marks a metric with no queries (e.g. an empty length bin).
    scalars = {k: float(v) for k, v in scalars.items() if v is not None}
    row.update(scalars)
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    if self.tb is not None:
      for k, v in scalars.items():
        self.tb.add_scalar(k, float(v), step)
      self.tb.flush()


def log(msg: str):
  """Prints on process 0 (progress, results)."""
  if jax.process_index() == 0:
    print(msg, flush=True)


def _fmt_time(s: float) -> str:
  s = int(s)
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def _scalars(prefix: str, per_replica: list[dict], std: bool = False) -> dict:
  """{prefix/k: mean over replicas} and, for R > 1, {r<i>/prefix/k: replica i's} (and
  {prefix_std/k} with `std`). One replica: exactly the single run's row."""
  if len(per_replica) == 1:
    return {f'{prefix}/{k}': v for k, v in per_replica[0].items()}
  mean, sd = replicas_lib.mean_std(per_replica)
  out = {f'{prefix}/{k}': v for k, v in mean.items()}
  if std:
    out.update({f'{prefix}_std/{k}': v for k, v in sd.items()})
  for i, values in enumerate(per_replica):
    out.update({f'r{i}/{prefix}/{k}': v for k, v in values.items()})
  return out


def _squeeze(tree):
  return jax.tree.map(lambda x: x[0], tree)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains, validates, checkpoints, and finally evaluates the best checkpoint on test."""
  workdir = os.path.abspath(workdir)
  config = recipes.apply_recipe(config)   # 'release' returns it unchanged
  reps = replicas_lib.replicas(config)   # a bad sweep is named before any compute
  n_rep = len(reps)
  dataset = dataset_lib.open_dataset(config)
  info = dataset.info
  config = workdir_lib.with_dataset(config, dataset)
  # Before anything is written or compiled: a workdir holds one model on one dataset.
  changes = workdir_lib.check_resume(workdir, config)
  if changes:
    log(f'Resuming {workdir} with changed settings: ' + '; '.join(changes))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    atomic.write_text(os.path.join(workdir, 'config.json'),
                      config.to_json_best_effort(indent=2))

  mesh = mesh_lib.make_mesh(n_rep)
  repl = mesh_lib.replicated(mesh)
  rsh = mesh_lib.replica_sharding(mesh)
  data_sh = mesh_lib.data_sharding(mesh)
  shard, num_shards = mesh_lib.data_shard(mesh)
  local_bs = mesh_lib.local_batch_size(config.batch_size, mesh)
  train_iter = dataset.train_iterator(local_bs, shard, num_shards)
  num_train = train_iter.num_examples
  spe = train_iter.steps_per_epoch   # examples without a target are skipped
  n_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * spe
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else spe

  model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
  schedule = diffusion.make_schedule(config.diffusion)
  tx = ts.make_optimizer(config, spe)   # state structure only; values are per replica
  # Replica r's keys are those of a single run with seed r (init 0, train 1, eval 2).
  init_rngs, train_rngs, sample_rngs = (
      jax.device_put(replicas_lib.replica_keys(config, tag), rsh) for tag in range(3))
  hp = jax.device_put(replicas_lib.hparams(config), rsh)

  params = jax.jit(jax.vmap(lambda r: workdir_lib.init_params(
      model, config, r, config.video_dim, config.text_dim)), out_shardings=rsh)(init_rngs)
  opt_state = jax.jit(jax.vmap(tx.init), out_shardings=rsh)(params)
  ckpts = checkpointing.WorkdirCheckpoints(workdir, config.max_checkpoints_to_keep,
                                           num_replicas=n_rep)
  # One replica keeps today's checkpoint layout: the leading axis is dropped on disk.
  to_disk = _squeeze if n_rep == 1 else (lambda t: t)
  on_disk_sh = repl if n_rep == 1 else rsh
  start = 0
  if ckpts.latest_step() is not None:
    try:
      start, params, opt_state, data_state = ckpts.restore_latest(
          workdir_lib.placed(to_disk(params), on_disk_sh),
          workdir_lib.placed(to_disk(opt_state), on_disk_sh))
    except checkpointing.CheckpointMismatch:
      ckpts.close()      # else orbax's background threads die noisily at exit
      raise
    if n_rep == 1:
      params, opt_state = jax.jit(lambda t: jax.tree.map(lambda x: x[None], t),
                                  out_shardings=rsh)((params, opt_state))
    train_iter.set_state(data_state)
    log(f'Resumed from step {start} ({workdir}/checkpoints/latest)')
  elif config.get('init_from'):
    # Every replica starts from the source's params (one replica's shapes are checked).
    src = workdir_lib.init_from(config.init_from, config, info, _squeeze(params), repl,
                                log=log)
    params = jax.jit(lambda t: jax.tree.map(
        lambda x: jnp.broadcast_to(x, (n_rep,) + x.shape), t), out_shardings=rsh)(src)
  state = ts.TrainState(step=jax.device_put(jnp.full((n_rep,), start, jnp.int32), rsh),
                        params=params, opt_state=opt_state)

  # The (R,) losses come back replicated: every process can read them (a few scalars).
  p_train_step = jax.jit(ts.make_replica_train_step(model, config, schedule, spe),
                         in_shardings=(rsh, data_sh, rsh, rsh), out_shardings=(rsh, repl),
                         donate_argnums=(0,))
  sample = sampling.make_replica_sample_fn(model, config, schedule, config.diffusion.sampling_steps)
  sample_fn = jax.jit(lambda p, vf, vm, qf, qm, rng: sample(p, vf, vm, qf, qm, rng, hp))
  writer = MetricsWriter(workdir, start, config.tensorboard)
  log(f'{num_train} train examples, {spe} steps/epoch, {n_steps} steps, '
       f'{jax.device_count()} devices on {jax.process_count()} processes'
       + (f', {n_rep} replicas on mesh {dict(mesh.shape)}' if n_rep > 1 else ''))

  def evaluate(params, split, out_dir=None):
    preds, _ = evaluation.predict_split(sample_fn, params, config, dataset, split, mesh,
                                        sample_rngs, num_replicas=n_rep)
    metrics = [evaluation.score(p, dataset, split, config.data.name) for p in preds]
    if out_dir is not None:
      if n_rep == 1:
        evaluation.write_outputs(out_dir, split, preds[0], metrics[0])
      else:
        evaluation.write_replica_outputs(out_dir, split, preds, metrics, reps)
    return metrics

  pending = []
  t_last, step_last = time.time(), start
  t_start = time.time()
  for step in range(start + 1, n_steps + 1):
    batch = mesh_lib.global_batch(train_iter.next(), mesh)
    state, parts = p_train_step(state, batch, train_rngs, hp)
    pending.append(parts)
    is_ckpt = step % config.checkpoint_every_steps == 0 or step == n_steps
    if step % config.log_every_steps == 0 or is_ckpt:
      # Also at checkpoint steps, so that a resumed run averages the same windows.
      host = jax.device_get(pending)
      pending = []
      per_rep = [{k: float(np.mean([p[k][r] for p in host])) for k in host[0]}
                 for r in range(n_rep)]
      scalars = _scalars('train', per_rep)
      now = time.time()
      ex_s = (step - step_last) * config.batch_size / max(now - t_last, 1e-9)
      eta = (n_steps - step) * (now - t_start) / max(step - start, 1)
      writer.write(step, scalars)
      speed = f'{ex_s:.0f} ex/s' + (f' x {n_rep} replicas' if n_rep > 1 else '')
      log(f'step {step}/{n_steps} | loss {scalars["train/total"]:.4f} | '
           f'{speed} | ETA {_fmt_time(eta)}')
      t_last, step_last = now, step
    if step % eval_every == 0 or step == n_steps:
      split = config.data.eval_split
      eval_params = ts.eval_params(state)   # the params, or their EMA (recipe plus)
      metrics = evaluate(eval_params, split)
      if metrics[0] is not None:
        briefs = [m['brief'] for m in metrics]
        writer.write(step, _scalars(split, briefs, std=True))
        mean, sd = replicas_lib.mean_std(briefs)
        log(f'step {step} {split}: ' + ', '.join(
            f'{k} {v:.2f}' + (f' ± {sd[k]:.2f}' if n_rep > 1 else '')
            for k, v in mean.items() if k.startswith('MR-full') and v is not None))
        for r, brief in enumerate(briefs):
          ckpts.save_best(step, jax.tree.map(lambda x: x[r], eval_params), brief, r)
    if is_ckpt:
      ckpts.save_latest(step, to_disk(state.params), to_disk(state.opt_state),
                        train_iter.get_state())
  ckpts.wait()
  ckpts.close()

  # Final report: each replica's best-on-validation checkpoint on val and test.
  best_params, _, used = workdir_lib.restore_replicas(workdir, 'best', config, rsh)
  out_dir = os.path.join(workdir, 'eval')
  final = {}
  for split in (config.data.eval_split, config.data.test_split):
    metrics = evaluate(best_params, split, out_dir)
    if metrics[0] is not None:
      final.update(_scalars(f'final_{split}', [m['brief'] for m in metrics], std=True))
      if n_rep == 1:
        log(f'{split} ({used[0]} checkpoint): ' + json.dumps(metrics[0]['brief']))
      else:
        mean, sd = replicas_lib.mean_std([m['brief'] for m in metrics])
        log(f'{split} ({used[0].split("_")[0]} checkpoints, mean ± std over {n_rep} replicas): '
             + replicas_lib.format_mean_std(mean, sd))
  writer.write(n_steps, final)
  return final
