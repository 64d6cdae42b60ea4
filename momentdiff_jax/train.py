"""The training loop: `train_and_evaluate(config, workdir)`.

A run is a stack of R >= 1 replicas (`run/replicas.py`: `num_seeds` seeds x the sweep
grid; R = 1 by default) updated by one jit-compiled step over a `(replica, data)` mesh
(batch sharded on `data` and shared by the replicas, replica-stacked state sharded on
`replica` and donated); periodic validation, orbax checkpoints (latest for resume, best
by val MR-full-mAP per replica), metrics.jsonl written by process 0 only (means over
replicas, and per replica under `r<k>/` when R > 1). The replica axis is dropped only
where a one-replica workdir is written or read (`checkpointing`, `metric_writer`,
`evaluation.write_outputs`), so that it is a single run's. Rerunning on the same
workdir resumes from the latest checkpoint: params, optimizer, step and the data
iterator are restored, and the per-step RNG is `fold_in(seed, step)`, so a resumed run
reproduces an uninterrupted one.
"""
import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax_loop_utils import periodic_actions

from momentdiff_jax import evaluation
from momentdiff_jax.common import atomic
from momentdiff_jax.common import recipes
from momentdiff_jax.data import dataset as dataset_lib
from momentdiff_jax.ops import diffusion
from momentdiff_jax.run import checkpointing
from momentdiff_jax.run import mesh as mesh_lib
from momentdiff_jax.run import metric_writer
from momentdiff_jax.run import replicas as replicas_lib
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir as workdir_lib


def log(msg: str):
  """Prints on process 0 (progress, results)."""
  if jax.process_index() == 0:
    print(msg, flush=True)


def _fmt_time(s: float) -> str:
  s = int(s)
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


@dataclasses.dataclass
class _Run:
  """What a run fixes before its first step."""
  workdir: str
  config: ml_collections.ConfigDict   # with what the dataset fixes, as config.json
  dataset: Any
  reps: list                          # the R replicas
  mesh: Any
  train_iter: Any
  n_steps: int
  eval_every: int
  model: Any
  keys: tuple                         # (init, train, eval): (R,) keys, one per replica
  hparams: dict                       # {swept key: (R,)}
  train_step: Callable                # jitted: (state, batch, keys, hparams)
  sample_fn: Callable                 # jitted: (params, *inputs, keys)

  @property
  def sharding(self):
    """Of the replica-stacked state: leading axis on `replica`."""
    return mesh_lib.replica_sharding(self.mesh)


def _setup(config, workdir: str) -> _Run:
  """Checks and records the config, opens the data, lays out the mesh and builds the
  two compiled programs (the update and the sampler)."""
  reps = replicas_lib.replicas(config)   # a bad sweep is named before any compute
  dataset = dataset_lib.open_dataset(config)
  config = workdir_lib.with_dataset(config, dataset)
  # Before anything is written or compiled: a workdir holds one model on one dataset.
  changes = workdir_lib.check_resume(workdir, config)
  if changes:
    log(f'Resuming {workdir} with changed settings: ' + '; '.join(changes))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    atomic.write_text(os.path.join(workdir, 'config.json'),
                      config.to_json_best_effort(indent=2))

  mesh = mesh_lib.make_mesh(len(reps))
  rsh = mesh_lib.replica_sharding(mesh)
  shard, num_shards = mesh_lib.data_shard(mesh)
  train_iter = dataset.train_iterator(mesh_lib.local_batch_size(config.batch_size, mesh),
                                      shard, num_shards)
  spe = train_iter.steps_per_epoch   # examples without a target are skipped
  model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
  # Replica r's keys are those of a single run with seed r (init 0, train 1, eval 2).
  keys = tuple(jax.device_put(replicas_lib.replica_keys(config, tag), rsh) for tag in range(3))
  hp = jax.device_put(replicas_lib.hparams(config), rsh)
  # The (R,) losses come back replicated: every process can read them (a few scalars).
  train_step = jax.jit(
      ts.make_train_step(model, config, diffusion.make_schedule(config.diffusion), spe),
      in_shardings=(rsh, mesh_lib.data_sharding(mesh), rsh, rsh),
      out_shardings=(rsh, mesh_lib.replicated(mesh)), donate_argnums=(0,))
  return _Run(
      workdir, config, dataset, reps, mesh, train_iter,
      n_steps=config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * spe,
      eval_every=config.eval_every_steps if config.eval_every_steps > 0 else spe,
      model=model, keys=keys, hparams=hp, train_step=train_step,
      sample_fn=evaluation.make_sampler(model, config, config.diffusion.sampling_steps, hp))


def _initial_state(run: _Run, ckpts: checkpointing.WorkdirCheckpoints):
  """R fresh replicas (each from its seed), replaced by the workdir's latest checkpoint
  (resume) or else by `config.init_from`'s best params (fine-tuning). Returns (state,
  the last step done)."""
  config, rsh, n_rep = run.config, run.sharding, len(run.reps)
  tx = ts.make_optimizer(config, run.train_iter.steps_per_epoch)   # structure only
  params = jax.jit(jax.vmap(lambda r: workdir_lib.init_params(
      run.model, config, r, config.video_dim, config.text_dim)), out_shardings=rsh)(run.keys[0])
  opt_state = jax.jit(jax.vmap(tx.init), out_shardings=rsh)(params)
  start = 0
  if ckpts.latest_step() is not None:
    try:
      start, params, opt_state, data_state = ckpts.restore_latest(params, opt_state)
    except checkpointing.CheckpointMismatch:
      ckpts.close()      # else orbax's background threads die noisily at exit
      raise
    run.train_iter.set_state(data_state)
    log(f'Resumed from step {start} ({run.workdir}/checkpoints/latest)')
  elif config.get('init_from'):
    # Every replica starts from the source's params.
    src = workdir_lib.init_from(config.init_from, config, run.dataset.info,
                                workdir_lib.abstract_variables(config), log=log)
    params = jax.jit(lambda t: jax.tree.map(
        lambda x: jnp.broadcast_to(x, (n_rep,) + x.shape), t), out_shardings=rsh)(src)
  step = jax.device_put(jnp.full((n_rep,), start, jnp.int32), rsh)
  return ts.TrainState(step=step, params=params, opt_state=opt_state), start


def _evaluate(run: _Run, params, split: str):
  """Every replica's predictions on `split` and their metrics (lists over replicas)."""
  preds, _ = evaluation.predict_split(run.sample_fn, params, run.config, run.dataset, split,
                                      run.mesh, run.keys[2])
  return preds, [evaluation.score(p, run.dataset, split, run.config.data.name) for p in preds]


class _Progress:
  """The training losses of the steps since the last report: averaged per replica,
  written with the step, and logged with the speed and the time left."""

  def __init__(self, run: _Run, writer, start: int):
    self.run, self.writer, self.start = run, writer, start
    self.pending = []
    self.t_start = self.t_last = time.time()
    self.step_last = start

  def add(self, losses):
    self.pending.append(losses)

  def report(self, step: int, t=None):
    host, self.pending = jax.device_get(self.pending), []
    per_rep = [{k: float(np.mean([p[k][r] for p in host])) for k in host[0]}
               for r in range(len(self.run.reps))]
    scalars = metric_writer.scalars('train', per_rep)
    self.writer.write_scalars(step, scalars)
    now, n_rep, n_steps = time.time(), len(self.run.reps), self.run.n_steps
    ex_s = (step - self.step_last) * self.run.config.batch_size / max(now - self.t_last, 1e-9)
    eta = (n_steps - step) * (now - self.t_start) / max(step - self.start, 1)
    speed = f'{ex_s:.0f} ex/s' + (f' x {n_rep} replicas' if n_rep > 1 else '')
    log(f'step {step}/{n_steps} | loss {scalars["train/total"]:.4f} | '
        f'{speed} | ETA {_fmt_time(eta)}')
    self.t_last, self.step_last = now, step


def _validate(run: _Run, ckpts, writer, step: int, params):
  """Every replica on the validation split: the scalars, a log line, and each
  replica's best checkpoint when it improved. `params`: the replica-stacked weights
  validation uses (`train_step.eval_params`: their EMA when the recipe keeps one)."""
  split = run.config.data.eval_split
  _, metrics = _evaluate(run, params, split)
  if metrics[0] is None:     # a split without labels
    return
  briefs = [m['brief'] for m in metrics]
  writer.write_scalars(step, metric_writer.scalars(split, briefs, std=True))
  log(f'step {step} {split}: ' + replicas_lib.format_briefs(briefs, prefix='MR-full'))
  ckpts.save_best(step, params, briefs)


def _final_report(run: _Run, writer) -> dict:
  """Each replica's best-on-validation checkpoint on val and test: files under eval/,
  the `final_<split>` scalars at the last step. Returns those scalars."""
  best = workdir_lib.restore(run.workdir, 'best', run.config)
  params = workdir_lib.place(best.params, run.sharding)
  final = {}
  for split in (run.config.data.eval_split, run.config.data.test_split):
    preds, metrics = _evaluate(run, params, split)
    summary = evaluation.write_outputs(os.path.join(run.workdir, 'eval'), split, preds,
                                       metrics, run.reps, len(run.reps))
    if summary is not None:
      final.update(metric_writer.scalars(f'final_{split}', [m['brief'] for m in metrics],
                                         std=True))
      log(evaluation.result_line(split, best.used, summary))
  writer.write_scalars(run.n_steps, final)
  return final


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, validates, checkpoints, and finally evaluates the best checkpoint on test.
  Returns the final scalars (as written to metrics.jsonl)."""
  workdir = os.path.abspath(workdir)
  run = _setup(recipes.apply_recipe(config), workdir)   # 'release': config unchanged
  config, n = run.config, run.n_steps
  ckpts = checkpointing.WorkdirCheckpoints(workdir, config.max_checkpoints_to_keep,
                                           num_replicas=len(run.reps))
  state, start = _initial_state(run, ckpts)
  writer = metric_writer.create(workdir, start, config.tensorboard)
  progress = _Progress(run, writer, start)
  log(f'{run.train_iter.num_examples} train examples, {run.train_iter.steps_per_epoch} '
      f'steps/epoch, {n} steps, {jax.device_count()} devices on {jax.process_count()} '
      'processes' + (f', {len(run.reps)} replicas on mesh {dict(run.mesh.shape)}'
                     if len(run.reps) > 1 else ''))

  every_ckpt = config.checkpoint_every_steps
  actions = [
      # Also at checkpoint steps, so that a resumed run averages the same windows.
      periodic_actions.PeriodicCallback(
          every_steps=config.log_every_steps, on_steps=[*range(every_ckpt, n, every_ckpt), n],
          callback_fn=lambda step, t, state: progress.report(step)),
      periodic_actions.PeriodicCallback(
          every_steps=run.eval_every, on_steps=[n],
          callback_fn=lambda step, t, state: _validate(run, ckpts, writer, step,
                                                       ts.eval_params(state))),
      periodic_actions.PeriodicCallback(
          every_steps=every_ckpt, on_steps=[n],
          callback_fn=lambda step, t, state: ckpts.save_latest(
              step, state.params, state.opt_state, run.train_iter.get_state())),
  ]
  for step in range(start + 1, n + 1):
    batch = mesh_lib.global_batch(run.train_iter.next(), run.mesh)
    state, losses = run.train_step(state, batch, run.keys[1], run.hparams)
    progress.add(losses)
    for action in actions:
      action(step, state=state)
  ckpts.wait()
  ckpts.close()
  final = _final_report(run, writer)
  writer.close()
  return final
