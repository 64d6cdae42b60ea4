"""Where the time of one training step goes, at the Charades-STA SlowFast+CLIP shapes.

  python benchmarks/step_breakdown.py [--lv=32] [--batch=32] [--num_seeds=1]
      [--dtype=float32|bfloat16] [--output=FILE.json]

On one length bucket (`--lv` clips, the most common Charades-STA training bucket by
default) it compiles and times, each as its own program on the same inputs:

  step        the update main.py runs (forward, backward, matching, AdamW; K replicas
              vmapped when `--num_seeds` > 1)
  loss        the forward pass and losses only (includes the matching)
  grad        forward + backward, no optimizer
  matching    the in-jit Hungarian matcher alone, once per decoder layer as the loss
              calls it, on (B, N_r) predictions against (B, M) GT windows
  optimizer   gradient clipping + AdamW + apply on the parameter tree alone
  dispatch    an empty jitted call: the floor of any call's launch latency

and two ways of running `--iters` steps: blocking on every step's losses (what a loop
that reads its losses each step does) and blocking once at the end (what main.py does:
losses are fetched every `log_every_steps`). Their gap is the cost of host syncs.
Shares are of the `step` time; parts overlap (loss is inside grad is inside step), so
they do not add up to 100%.
"""
import os
import sys
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

# Siblings (this folder is sys.path[0]).
import report
import speed_inputs as inputs
from speed import _timeit as _time  # one warm-up call, then the mean over iters
from speed import replica_state
from momentdiff_jax.common import app
from momentdiff_jax.common import config_base
from momentdiff_jax.ops import diffusion
from momentdiff_jax.ops import matching
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO_DIM, TEXT_DIM = 2818, 512

FLAGS = flags.FlagValues()
flags.DEFINE_integer('lv', 32, 'Padded video length (a bucket).', flag_values=FLAGS)
flags.DEFINE_integer('batch', 32, 'Examples per step.', flag_values=FLAGS)
flags.DEFINE_integer('num_seeds', 1, 'Replicas in the step.', flag_values=FLAGS)
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Model dtype.',
                  flag_values=FLAGS)
flags.DEFINE_integer('iters', 0, 'Timed calls (default 20 on accelerators, 6 on CPU).',
                     flag_values=FLAGS)
flags.DEFINE_string('output', '', 'Also write the JSON here.', flag_values=FLAGS)
flags.DEFINE_string('annotations', None,
                    'Dir of Charades-STA annotation files to take the lengths from '
                    '(default: the shipped table, benchmarks/data/charades_sta_lengths.json).',
                    flag_values=FLAGS)


def _compiled(fn, *args, **kw):
  t = time.perf_counter()
  c = jax.jit(fn, **kw).lower(*args).compile()
  return c, time.perf_counter() - t


def _main():
  args = app.namespace(FLAGS)
  dev = jax.devices()[0]
  iters = args.iters or (6 if dev.platform == 'cpu' else 20)
  log = lambda s: print(s, flush=True)
  setup = _setup(args, dev)
  log(f'device: {dev.device_kind} ({dev.platform}); jax {jax.__version__}; '
      f'Lv {args.lv}, batch {args.batch}, {args.num_seeds} replica(s), {args.dtype}')
  times, compile_s, run_step = _time_step_and_loss(setup, args.num_seeds, iters)
  _time_matching_and_optimizer(setup, args.batch, iters, times, compile_s)
  # Host syncs: the same steps, blocking on each step's losses vs once at the end.
  t = time.perf_counter()
  for _ in range(iters):
    float(jax.device_get(run_step()[0]))
  times['step_blocking_each'] = (time.perf_counter() - t) / iters
  times['step_blocking_once'] = _time(run_step, iters)
  _report(args, dev, iters, times, compile_s, log)


def _setup(args, dev) -> types.SimpleNamespace:
  """The Charades config at `args.dtype`, one training batch on `dev`, the model, its
  optimizer, fresh params and a key."""
  config = config_base.load_config(os.path.join(ROOT, 'configs', 'charades.py'))
  config.model.dtype = args.dtype
  lengths = inputs.load_lengths(args.annotations, config.data.max_v_l, config.data.max_q_l)
  batch = inputs.train_batch(np.random.default_rng(args.lv), args.batch, args.lv, lengths,
                             config)
  model = workdir_lib.create_model(config, VIDEO_DIM, TEXT_DIM)
  params = jax.jit(lambda r: workdir_lib.init_params(model, config, r, VIDEO_DIM,
                                                     TEXT_DIM))(jax.random.PRNGKey(0))
  return types.SimpleNamespace(
      config=config, batch=jax.device_put(batch, dev), model=model, params=params,
      schedule=diffusion.make_schedule(config.diffusion), tx=ts.make_optimizer(config, 100),
      rng=jax.random.PRNGKey(1))


def _time_step_and_loss(s, k: int, iters: int):
  """The whole step of `k` replicas, the loss alone and its gradient: (times,
  compile seconds, a function running one step)."""
  times, compile_s = {}, {}
  # The step main.py runs (replica axis even for K = 1, as there).
  state = replica_state(s.params, s.tx, k)
  rngs = jax.random.split(s.rng, k)
  step, compile_s['step'] = _compiled(ts.make_train_step(s.model, s.config, s.schedule, 100),
                                      state, s.batch, rngs, {}, donate_argnums=(0,))
  holder = [state]

  def run_step():
    holder[0], parts = step(holder[0], s.batch, rngs, {})
    return parts['total']

  times['step'] = _time(run_step, iters)
  loss_fn = lambda p, b, r: ts.loss_fn(p, s.model, s.config, s.schedule, b, r)[0]
  loss, compile_s['loss'] = _compiled(loss_fn, s.params, s.batch, s.rng)
  times['loss'] = _time(lambda: loss(s.params, s.batch, s.rng), iters)
  grad, compile_s['grad'] = _compiled(jax.grad(loss_fn), s.params, s.batch, s.rng)
  times['grad'] = _time(lambda: grad(s.params, s.batch, s.rng), iters)
  s.grads = grad(s.params, s.batch, s.rng)
  return times, compile_s, run_step


def _time_matching_and_optimizer(s, batch_size: int, iters: int, times, compile_s):
  """Hungarian matching at the loss's shapes, the optimizer update, and an empty
  dispatch, added to `times` / `compile_s`."""
  config = s.config
  # Matching inputs of the shapes the loss sees: Ld layers of (B, N, 2).
  ld, n = config.model.dec_layers, config.diffusion.num_spans
  r = np.random.default_rng(0)
  logits = jnp.asarray(r.standard_normal((ld, batch_size, n, 2)), jnp.float32)
  spans = jnp.asarray(np.stack([r.uniform(0.05, 0.95, (ld, batch_size, n)),
                                r.uniform(0.02, 0.5, (ld, batch_size, n))], -1), jnp.float32)
  layers = ld if config.loss.aux else 1
  tgt, mask = s.batch['span_targets'], s.batch['span_mask']

  def match_all(logits, spans, tgt, mask):
    return [matching.match_batch(logits[i], spans[i], tgt, mask, config.matcher)
            ['tgt_idx_for_pred'] for i in range(layers)]

  match, compile_s['matching'] = _compiled(match_all, logits, spans, tgt, mask)
  times['matching'] = _time(lambda: match(logits, spans, tgt, mask), iters)
  opt_state = s.tx.init(s.params)

  def opt_fn(grads, opt_state, params):
    updates, opt_state = s.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt, compile_s['optimizer'] = _compiled(opt_fn, s.grads, opt_state, s.params)
  times['optimizer'] = _time(lambda: opt(s.grads, opt_state, s.params), iters)
  x = jnp.zeros((8,), jnp.float32)
  empty, _ = _compiled(lambda x: x + 1, x)
  times['dispatch'] = _time(lambda: empty(x), max(iters, 100))


def _report(args, dev, iters: int, times: dict, compile_s: dict, log):
  """The table of parts (ms, share of the step, compile s) and `--output`'s JSON."""
  k, full = args.num_seeds, times['step']
  log(f'{"part":22s} {"ms":>10s} {"of step":>8s} {"compile s":>10s}')
  for name, sec in times.items():
    log(f'{name:22s} {sec * 1e3:10.2f} {sec / full:8.1%} '
        f'{compile_s.get(name, float("nan")):10.1f}')
  log(f'train examples/s (summed over {k} replica(s)): {k * args.batch / full:.1f}')
  report.write_result(args.output, {
      'device': f'{dev.device_kind} ({dev.platform})', 'jax_version': jax.__version__,
      'lv': args.lv, 'batch': args.batch, 'num_seeds': k, 'dtype': args.dtype,
      'iters': iters, 'seconds': times, 'compile_s': compile_s,
      'share_of_step': {n: s / full for n, s in times.items()},
      'train_examples_per_s': k * args.batch / full}, log)


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
