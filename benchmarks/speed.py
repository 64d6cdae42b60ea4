"""Training and inference speed at the Charades-STA SlowFast+CLIP shapes.

  python benchmarks/speed.py [--output=speed.json] [--dtype=float32|bfloat16]
      [--num_seeds=K | --num_seeds=1,4,16]

Shapes: Dv 2818, Dt 512, N_r 5, configs/charades.py hyper-parameters; video lengths
follow the real Charades-STA durations (1 clip/s; the counts shipped in
benchmarks/data/charades_sta_lengths.json, or `--annotations=DIR`), query lengths are
words + 2 capped at 32; feature values are random. Training batches (32) are cut by
the input pipeline's own bucket plan (`data.length_buckets`), inference batches
(`--infer_batch`, 64 on CPU) by its eval plan; each measured bucket is weighted by
its share of the batches, so the rates are per epoch of Charades-STA.

Per device count it prints: compile time of the train step and of the sampler; train
examples/s (of K = `--num_seeds` replicas trained at once, summed, and the step time
per replica; with a list of K, each K in turn and its ratios to the first K, measured in
the same run: `by_num_seeds` in the JSON); inference queries/s for sampling steps 1, 2, 10, 50, 100 (the condition
and the decoder keys/values computed once per query, the scan only runs the N_r
rows); FLOPs per train example and per query from XLA's cost analysis and the
achieved GFLOP/s next to this machine's roof (one large matmul, measured in the same
run); peak memory (device memory_stats on accelerators, process RSS on CPU).
The authors' release is timed by release_speed.py; against_release.py runs both
alternately and reports ratios measured in one run.
"""
import functools
import math
import os
import resource
import sys
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import speed_inputs as inputs   # a sibling: this folder is sys.path[0]
import report   # a sibling: this folder is sys.path[0]
from momentdiff_jax.common import app
from momentdiff_jax.common import config_base
from momentdiff_jax.inference import sampling
from momentdiff_jax.ops import diffusion
from momentdiff_jax.run import mesh as mesh_lib
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO_DIM, TEXT_DIM = 2818, 512


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', 0.0)) if cost else 0.0


def _timeit(fn, iters: int) -> float:
  """Seconds per call: one untimed warm-up call, then the mean over `iters`."""
  jax.block_until_ready(fn())
  t = time.perf_counter()
  for _ in range(iters):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / iters


def matmul_roof_gflops(device, dtype, n: int) -> float:
  """Achieved GFLOP/s of one large square matmul on `device`: this machine's roof."""
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  f = jax.jit(lambda a: a @ a)
  return 2 * n ** 3 / _timeit(lambda: f(a), 5) / 1e9


def peak_memory_bytes(devices) -> tuple[int, str]:
  stats = [d.memory_stats() or {} for d in devices] if devices[0].platform != 'cpu' else []
  peaks = [s.get('peak_bytes_in_use', 0) for s in stats]
  if peaks and max(peaks) > 0:
    return int(max(peaks)), 'device peak_bytes_in_use'
  # ru_maxrss is in KiB on Linux.
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, 'process peak RSS'


def replica_state(params, tx, k: int, sharding=None) -> ts.TrainState:
  """The state main.py's replica step takes: K copies of `params` (new arrays, so the
  step may donate them and the caller's stay) with fresh optimizer states, step 0."""
  params = jax.jit(lambda p: jax.tree.map(lambda x: jnp.stack([x] * k), p),
                   out_shardings=sharding)(params)
  return ts.TrainState(step=jax.device_put(jnp.zeros((k,), jnp.int32), sharding),
                       params=params,
                       opt_state=jax.jit(jax.vmap(tx.init), out_shardings=sharding)(params))


def bench_train(model, config, params, devices, mix, lengths, args, log, k: int):
  """Compile + time the training step of `k` replicas (the step main.py runs: vmapped
  over a replica axis, on a (replica, data) mesh of `devices`) on each bucket of `mix`;
  weighted rates, examples/s summed over the replicas."""
  mesh = mesh_lib.make_mesh(k, devices)
  rsh, data = mesh_lib.replica_sharding(mesh), mesh_lib.data_sharding(mesh)
  schedule = diffusion.make_schedule(config.diffusion)
  tx = ts.make_optimizer(config, 100)
  step = jax.jit(ts.make_train_step(model, config, schedule, 100),
                 in_shardings=(rsh, data, rsh, rsh), out_shardings=(rsh, rsh),
                 donate_argnums=(0,))
  state = replica_state(params, tx, k, rsh)
  rng = jax.device_put(jax.random.split(jax.random.PRNGKey(0), k), rsh)
  hp = {}
  rows = {}
  for lv, share in mix.items():
    batch = inputs.train_batch(np.random.default_rng(lv), args.train_batch, lv, lengths, config)
    batch = jax.device_put(batch, data)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, rng, hp).compile()
    compile_s = time.perf_counter() - t0
    flops = _flops(compiled)
    holder = [state]

    def run():
      holder[0], parts = compiled(holder[0], batch, rng, hp)
      return parts['total']

    sec = _timeit(run, args.train_iters)
    state = holder[0]
    examples = k * args.train_batch   # replica-examples per step
    rows[lv] = dict(share=share, compile_s=compile_s, step_s=sec,
                    gflop_per_example=flops * mesh.size / examples / 1e9,
                    gflops=flops * mesh.size / sec / 1e9)
    log(f'  train  Lv={lv:3d} ({share:5.1%} of batches): compile {compile_s:5.1f}s  '
        f'{examples / sec:7.1f} ex/s ({k} replica(s), step {sec * 1e3:.1f} ms)  '
        f'{rows[lv]["gflop_per_example"]:.2f} GFLOP/ex  {rows[lv]["gflops"]:.0f} GFLOP/s')
  mean_step = sum(r['share'] * r['step_s'] for r in rows.values())
  gflop_ex = sum(r['share'] * r['gflop_per_example'] for r in rows.values())
  return dict(examples_per_s=k * args.train_batch / mean_step,
              step_s=mean_step, step_s_per_replica=mean_step / k, num_seeds=k,
              compile_s=sum(r['compile_s'] for r in rows.values()),
              gflop_per_example=gflop_ex, gflops=gflop_ex * k * args.train_batch / mean_step,
              buckets={str(k): v for k, v in rows.items()})


def bench_infer(model, config, params, mesh, mix, lengths, args, log):
  """Compile + time the sampler per step count and bucket; weighted queries/s."""
  data = mesh_lib.data_sharding(mesh)
  schedule = diffusion.make_schedule(config.diffusion)
  rng = jax.random.PRNGKey(1)
  per_steps, flops_q, compile_s = {}, {}, {}
  batches = {lv: jax.device_put(inputs.infer_batch(np.random.default_rng(lv), args.infer_batch,
                                                   lv, lengths), data) for lv in mix}
  for steps in args.steps:
    sample = jax.jit(functools.partial(sampling.sample_one, model, config, schedule, steps))
    mean_s, gflop, csum = 0.0, 0.0, 0.0
    for lv, share in mix.items():
      b = batches[lv]
      argv = (params, b['video_feat'], b['video_mask'], b['query_feat'], b['query_mask'], rng)
      t0 = time.perf_counter()
      compiled = sample.lower(*argv).compile()
      csum += time.perf_counter() - t0
      sec = _timeit(lambda: compiled(*argv)['spans'], args.infer_iters)
      mean_s += share * sec
      gflop += share * _sampler_flops(model, config, schedule, params, b, steps, mesh)
    per_steps[str(steps)] = args.infer_batch / mean_s
    flops_q[str(steps)] = gflop / args.infer_batch / 1e9
    compile_s[str(steps)] = csum
    log(f'  infer  {steps:3d} steps: compile {csum:5.1f}s  {per_steps[str(steps)]:9.1f} q/s  '
        f'{flops_q[str(steps)]:.3f} GFLOP/q  '
        f'{flops_q[str(steps)] * per_steps[str(steps)]:.0f} GFLOP/s')
  return dict(queries_per_s=per_steps, gflop_per_query=flops_q, compile_s=compile_s)


_PIECE_FLOPS = {}


def _sampler_flops(model, config, schedule, params, b, steps, mesh):
  """FLOPs of a whole sampling call: condition once + `steps` denoiser steps.

  XLA's cost analysis counts a while loop's body once, whatever its trip count, so
  the sampler's scan is costed as two pieces: the condition (encode + prepare) and
  one step (denoise + DDIM update), both compiled alone on the same shapes.
  """
  key = (b['video_feat'].shape, mesh.size)
  if key not in _PIECE_FLOPS:
    one = jax.jit(functools.partial(sampling.sample_one, model, config, schedule, 1))
    two = jax.jit(functools.partial(sampling.sample_one, model, config, schedule, 2))
    argv = (params, b['video_feat'], b['video_mask'], b['query_feat'], b['query_mask'],
            jax.random.PRNGKey(0))
    f1 = _flops(one.lower(*argv).compile())
    f2 = _flops(two.lower(*argv).compile())
    if f2 > f1 * 1.01:   # loop unrolled or trip count known: the difference is one step
      _PIECE_FLOPS[key] = (f1 - (f2 - f1), f2 - f1)
    else:
      _PIECE_FLOPS[key] = _pieces(model, config, params, b)
  cond, step = _PIECE_FLOPS[key]
  return (cond + steps * step) * mesh.size


def _pieces(model, config, params, b):
  from momentdiff_jax.model import MomentDiff

  def cond_fn(params, vf, vm, qf, qm):
    cond = model.apply(params, vf, vm, qf, qm, train=False, method=MomentDiff.encode)
    return model.apply(params, cond, method=MomentDiff.prepare), cond['saliency']

  argv = (params, b['video_feat'], b['video_mask'], b['query_feat'], b['query_mask'])
  c = jax.jit(cond_fn).lower(*argv).compile()
  cache = jax.eval_shape(cond_fn, *argv)[0]
  n = config.diffusion.num_spans
  bsz = b['video_feat'].shape[0]

  def step_fn(params, cache, spans, t):
    out = model.apply(params, cache, spans, t, train=False, method=MomentDiff.denoise)
    return out['pred_logits'][-1], out['pred_spans'][-1]

  s = jax.jit(step_fn).lower(params, cache, jax.ShapeDtypeStruct((bsz, n, 2), jnp.float32),
                             jax.ShapeDtypeStruct((bsz,), jnp.int32)).compile()
  return _flops(c), _flops(s)


FLAGS = flags.FlagValues()
flags.DEFINE_string('output', '', 'Also write the figures as JSON here.', flag_values=FLAGS)
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Model dtype.',
                  flag_values=FLAGS)
flags.DEFINE_integer('train_batch', 32, 'Examples per training step.', flag_values=FLAGS)
flags.DEFINE_integer('infer_batch', 0, 'Queries per sampler call (default: 64 on CPU, 1024 '
                     'on accelerators).', flag_values=FLAGS)
flags.DEFINE_string('num_seeds', '1',
                    'Replicas trained at once (main.py --config.num_seeds); train '
                    'examples/s are summed over them. A comma list (e.g. 1,4,16) '
                    'measures each in turn; the top-level train figures are the last.',
                    flag_values=FLAGS)
flags.DEFINE_string('steps', '1,2,10,50,100', 'Sampling step counts to time.',
                    flag_values=FLAGS)
flags.DEFINE_integer('train_iters', 0, 'Timed steps per bucket.', flag_values=FLAGS)
flags.DEFINE_integer('infer_iters', 0, 'Timed calls per bucket.', flag_values=FLAGS)
flags.DEFINE_float('min_share', 0.02,
                   'Buckets with a smaller share of batches are not measured; the measured '
                   'shares are renormalized.', flag_values=FLAGS)
flags.DEFINE_string('device_counts', '',
                    'Comma list (default: powers of two up to all devices).', flag_values=FLAGS)
flags.DEFINE_string('parts', 'infer,train',
                    'What to measure, in this order (a GPU compiles the train step for ~40 s '
                    'per bucket: put the part you need first).', flag_values=FLAGS)
flags.DEFINE_string('annotations', None,
                    'Dir of Charades-STA annotation files to take the lengths from '
                    '(default: the shipped table, benchmarks/data/charades_sta_lengths.json).',
                    flag_values=FLAGS)


def settings(devices) -> types.SimpleNamespace:
  """The flags, checked, with the defaults that depend on the devices filled in;
  `seeds_list` is --num_seeds as a list, `num_seeds` its last K, `counts` the device
  counts to measure."""
  args = app.namespace(FLAGS)
  args.steps = [int(s) for s in args.steps.split(',')]
  try:
    args.seeds_list = [int(k) for k in str(args.num_seeds).split(',')]
  except ValueError:
    args.seeds_list = []
  if not args.seeds_list or min(args.seeds_list) < 1:
    raise app.UsageError(f'--num_seeds={args.num_seeds}: expected positive integers, '
                         'e.g. 1,4,16')
  args.num_seeds = args.seeds_list[-1]
  args.accel = devices[0].platform != 'cpu'
  args.infer_batch = args.infer_batch or (1024 if args.accel else 64)
  args.train_iters = args.train_iters or (20 if args.accel else 3)
  args.infer_iters = args.infer_iters or (20 if args.accel else 2)
  args.counts = ([int(c) for c in args.device_counts.split(',')] if args.device_counts else
                 [2 ** k for k in range(int(math.log2(len(devices))) + 1)])
  return args


def bucket_mixes(config, lengths, args) -> tuple:
  """(train mix, mean padded train length, infer mix); a --min_share that leaves a
  measured part no bucket is a usage error, before anything compiles."""
  train_mix, mean_padded = inputs.train_mix(lengths, config, args.train_batch, args.min_share)
  infer_mix = inputs.infer_mix(lengths, config, args.infer_batch, args.min_share)
  for part, mix in (('train', train_mix), ('infer', infer_mix)):
    if part in args.parts.split(',') and not mix:
      raise app.UsageError(f'--min_share={args.min_share}: no {part} bucket holds that '
                           'share of the batches; lower it')
  return train_mix, mean_padded, infer_mix


def add_ratios(by_k: dict, seeds_list: list, log) -> None:
  """Step time and summed throughput of each K as ratios to the first K (in place)."""
  base_k = seeds_list[0]
  base = by_k[str(base_k)]
  for k, row in by_k.items():
    # Ratios within this run: the machine's state is shared by every K.
    row['step_time_vs_first'] = row['step_s'] / base['step_s']
    row['throughput_vs_first'] = row['examples_per_s'] / base['examples_per_s']
    log(f'  K={k}: step {row["step_time_vs_first"]:.2f}x the K={base_k} step '
        f'(K/{base_k} = {int(k) / base_k:g}x the work), summed throughput '
        f'{row["throughput_vs_first"]:.2f}x')


def bench_devices(model, config, devices, mixes, lengths, args, log, roof) -> dict:
  """Every part of --parts on `devices` (a data mesh): train (each K) and infer figures,
  peak memory."""
  train_mix, infer_mix = mixes
  mesh = mesh_lib.make_mesh(1, devices)
  params = jax.jit(lambda r: workdir_lib.init_params(model, config, r, VIDEO_DIM, TEXT_DIM),
                   out_shardings=mesh_lib.replicated(mesh))(jax.random.PRNGKey(0))
  log(f'== {len(devices)} device(s)')
  tr = dict(examples_per_s=None, compile_s=None, gflop_per_example=None, gflops=None,
            step_s=None, step_s_per_replica=None)
  inf, by_k = dict(queries_per_s={}, gflop_per_query={}, compile_s={}), {}
  for part in args.parts.split(','):
    if part == 'infer':
      inf = bench_infer(model, config, params, mesh, infer_mix, lengths, args, log)
    elif part == 'train':
      for k in args.seeds_list:
        by_k[str(k)] = tr = bench_train(model, config, params, devices, train_mix,
                                        lengths, args, log, k)
        log(f'  train {tr["examples_per_s"]:.1f} ex/s summed over {k} replica(s), '
            f'step {tr["step_s"] * 1e3:.1f} ms ({tr["step_s_per_replica"] * 1e3:.1f} ms '
            f'per replica), '
            f'{tr["gflop_per_example"]:.2f} GFLOP/ex, {tr["gflops"]:.0f} GFLOP/s '
            f'(matmul roof {roof:.0f} per device); compile {tr["compile_s"]:.1f}s')
  if len(by_k) > 1:
    add_ratios(by_k, args.seeds_list, log)
  mem, mem_kind = peak_memory_bytes(devices)
  log('  infer ' + ', '.join(f'{k} steps {v:.0f} q/s' for k, v in inf['queries_per_s'].items()))
  log(f'  peak memory {mem / 2**20:.0f} MiB ({mem_kind})')
  return dict(train=tr, infer=inf, peak_memory_bytes=mem, peak_memory_kind=mem_kind,
              by_num_seeds=by_k)


def summary(results: dict, args, run: dict) -> dict:
  """The JSON: the figures of the largest device count at the top level (CONTRACT.md
  keys), every device count under `per_device_count`. `run`: device, roof,
  mean_padded, train_mix, infer_mix, lengths_source."""
  top = results[str(args.counts[-1])]
  tr, inf = top['train'], top['infer']
  return {
      'device': run['device'],
      'device_count': args.counts[-1],
      'dtype': args.dtype,
      'jax_version': jax.__version__,
      'num_seeds': args.num_seeds,
      # {K: the train figures of K replicas, with step_time_vs_first and
      # throughput_vs_first against the first K of --num_seeds}; top-level = the last K.
      'by_num_seeds': top['by_num_seeds'],
      'train_examples_per_s': tr['examples_per_s'],
      'train_step_s': tr['step_s'],
      'train_step_s_per_replica': tr['step_s_per_replica'],
      'infer_queries_per_s': inf['queries_per_s'],
      'train_compile_s': tr['compile_s'],
      # The slowest over the step counts (one compile per bucket each); per count below.
      'sampler_compile_s': max(inf['compile_s'].values(), default=None),
      'sampler_compile_s_by_steps': inf['compile_s'],
      'train_gflop_per_example': tr['gflop_per_example'],
      'infer_gflop_per_query': inf['gflop_per_query'],
      'train_gflops_achieved': tr['gflops'],
      'infer_gflops_achieved': {k: inf['gflop_per_query'][k] * v
                                for k, v in inf['queries_per_s'].items()},
      'roof_gflops_measured': run['roof'],
      'peak_memory_bytes': top['peak_memory_bytes'],
      'train_batch': args.train_batch, 'infer_batch': args.infer_batch,
      'train_mean_padded_clips': run['mean_padded'],
      'train_bucket_shares': {str(k): v for k, v in run['train_mix'].items()},
      'infer_bucket_shares': {str(k): v for k, v in run['infer_mix'].items()},
      'lengths_source': run['lengths_source'],
      'per_device_count': results,
  }


def _main():
  devices = jax.devices()
  args = settings(devices)
  log = lambda s: print(s, flush=True)
  config = config_base.load_config(os.path.join(ROOT, 'configs', 'charades.py'))
  config.model.dtype = args.dtype
  lengths = inputs.load_lengths(args.annotations, config.data.max_v_l, config.data.max_q_l)
  train_mix, mean_padded, infer_mix = bucket_mixes(config, lengths, args)
  device_name = f'{len(devices)} x {devices[0].device_kind} ({devices[0].platform})'
  log(f'device: {device_name}; jax {jax.__version__}; dtype {args.dtype}; '
      f'lengths from {lengths["source"]}')
  log(f'train batches: mean padded length {mean_padded:.1f} clips; measured buckets {train_mix}; '
      f'infer batch {args.infer_batch}, buckets {infer_mix}')
  model = workdir_lib.create_model(config, VIDEO_DIM, TEXT_DIM)
  roof_n = 8192 if args.accel else 2048
  roof = matmul_roof_gflops(devices[0], jnp.dtype(args.dtype), roof_n)
  log(f'roof: one {roof_n}^2 {args.dtype} matmul runs at {roof:.0f} GFLOP/s '
      f'on one device here')
  results = {str(n): bench_devices(model, config, devices[:n], (train_mix, infer_mix),
                                   lengths, args, log, roof) for n in args.counts}
  out = summary(results, args, dict(device=device_name, roof=roof, mean_padded=mean_padded,
                                    train_mix=train_mix, infer_mix=infer_mix,
                                    lengths_source=lengths['source']))
  report.write_result(args.output, out, log)
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
