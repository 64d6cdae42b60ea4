"""The training loop: `train_and_evaluate(config, workdir)`.

One jit-compiled update over a data-parallel `Mesh` (batch sharded on `data`, state
replicated, state donated), periodic validation, orbax checkpoints (latest for resume,
best by val MR-full-mAP), metrics.jsonl written by process 0 only. Rerunning on the
same workdir resumes from the latest checkpoint: params, optimizer, step and the data
iterator are restored, and the per-step RNG is `fold_in(seed, step)`, so a resumed run
reproduces an uninterrupted one.
"""
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from momentdiff_jax import checkpointing
from momentdiff_jax import diffusion
from momentdiff_jax import evaluation
from momentdiff_jax import mesh as mesh_lib
from momentdiff_jax import train_step as ts
from momentdiff_jax import workdir as workdir_lib
from momentdiff_jax.data import dataset as dataset_lib

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
      keep = [json.dumps(r) + '\n' for r in rows if r['step'] <= resume_step
              and not any(k.startswith('final_') for k in r)]
      with open(self.path, 'w') as f:
        f.writelines(keep)
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


def evaluate_split(sample_fn, params, config, dataset, split, mesh, rng, out_dir=None):
  preds, _ = evaluation.predict_split(sample_fn, params, config, dataset, split, mesh, rng)
  metrics = evaluation.score(preds, dataset, split, config.data.name)
  if out_dir is not None:
    evaluation.write_outputs(out_dir, split, preds, metrics)
  return preds, metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains, validates, checkpoints, and finally evaluates the best checkpoint on test."""
  workdir = os.path.abspath(workdir)
  dataset = dataset_lib.open_dataset(config)
  info = dataset.info
  config = workdir_lib.with_dataset(config, dataset)
  # Before anything is written or compiled: a workdir holds one model on one dataset.
  changes = workdir_lib.check_resume(workdir, config)
  if changes:
    log(f'Resuming {workdir} with changed settings: ' + '; '.join(changes))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))

  mesh = mesh_lib.make_mesh()
  repl = mesh_lib.replicated(mesh)
  data_sh = mesh_lib.data_sharding(mesh)
  local_bs = mesh_lib.local_batch_size(config.batch_size)
  train_iter = dataset.train_iterator(local_bs, jax.process_index(), jax.process_count())
  num_train = train_iter.num_examples
  spe = train_iter.steps_per_epoch   # examples without a target are skipped
  n_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * spe
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else spe

  model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
  schedule = diffusion.make_schedule(config.diffusion)
  tx = ts.make_optimizer(config, spe)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, train_rng = (jax.random.fold_in(rng, i) for i in range(2))
  sample_rng = workdir_lib.eval_rng(config.seed)

  params = jax.jit(lambda r: workdir_lib.init_params(model, config, r, config.video_dim,
                                                     config.text_dim),
                   out_shardings=repl)(init_rng)
  opt_state = jax.jit(tx.init, out_shardings=repl)(params)
  ckpts = checkpointing.WorkdirCheckpoints(workdir, config.max_checkpoints_to_keep)
  start = 0
  if ckpts.latest_step() is not None:
    try:
      start, params, opt_state, data_state = ckpts.restore_latest(
          workdir_lib.placed(params, repl), workdir_lib.placed(opt_state, repl))
    except checkpointing.CheckpointMismatch:
      ckpts.close()      # else orbax's background threads die noisily at exit
      raise
    train_iter.set_state(data_state)
    log(f'Resumed from step {start} ({workdir}/checkpoints/latest)')
  elif config.get('init_from'):
    params = workdir_lib.init_from(config.init_from, config, info, params, repl, log=log)
  state = ts.TrainState(step=jax.device_put(jnp.asarray(start, jnp.int32), repl),
                        params=params, opt_state=opt_state)

  p_train_step = jax.jit(ts.make_train_step(model, config, schedule, tx),
                         in_shardings=(repl, data_sh, repl), out_shardings=(repl, repl),
                         donate_argnums=(0,))
  sample_fn = jax.jit(ts.make_sample_fn(model, config, schedule,
                                        config.diffusion.sampling_steps))
  writer = MetricsWriter(workdir, start, config.tensorboard)
  log(f'{num_train} train examples, {spe} steps/epoch, {n_steps} steps, '
       f'{jax.device_count()} devices on {jax.process_count()} processes')

  pending = []
  t_last, step_last = time.time(), start
  t_start = time.time()
  for step in range(start + 1, n_steps + 1):
    batch = mesh_lib.global_batch(train_iter.next(), mesh)
    state, parts = p_train_step(state, batch, train_rng)
    pending.append(parts)
    is_ckpt = step % config.checkpoint_every_steps == 0 or step == n_steps
    if step % config.log_every_steps == 0 or is_ckpt:
      # Also at checkpoint steps, so that a resumed run averages the same windows.
      host = jax.device_get(pending)
      pending = []
      scalars = {f'train/{k}': float(np.mean([p[k] for p in host])) for k in host[0]}
      now = time.time()
      ex_s = (step - step_last) * config.batch_size / max(now - t_last, 1e-9)
      eta = (n_steps - step) * (now - t_start) / max(step - start, 1)
      writer.write(step, scalars)
      log(f'step {step}/{n_steps} | loss {scalars["train/total"]:.4f} | '
           f'{ex_s:.0f} ex/s | ETA {_fmt_time(eta)}')
      t_last, step_last = now, step
    if step % eval_every == 0 or step == n_steps:
      _, metrics = evaluate_split(sample_fn, state.params, config, dataset,
                                  config.data.eval_split, mesh, sample_rng)
      if metrics is not None:
        brief = metrics['brief']
        writer.write(step, {f'{config.data.eval_split}/{k}': v for k, v in brief.items()})
        log(f'step {step} {config.data.eval_split}: ' +
             ', '.join(f'{k} {v:.2f}' for k, v in brief.items() if k.startswith('MR-full')))
        ckpts.save_best(step, state.params, brief)
    if is_ckpt:
      ckpts.save_latest(step, state.params, state.opt_state, train_iter.get_state())
  ckpts.wait()
  ckpts.close()

  # Final report: the best-on-validation checkpoint on val and test.
  _, best_params, used = checkpointing.restore_params(workdir, 'best',
                                                      workdir_lib.placed(state.params, repl))
  out_dir = os.path.join(workdir, 'eval')
  final = {}
  for split in (config.data.eval_split, config.data.test_split):
    _, metrics = evaluate_split(sample_fn, best_params, config, dataset, split, mesh, sample_rng,
                                out_dir)
    if metrics is not None:
      final.update({f'final_{split}/{k}': v for k, v in metrics['brief'].items()})
      log(f'{split} ({used} checkpoint): ' + json.dumps(metrics['brief']))
  writer.write(n_steps, final)
  return final
