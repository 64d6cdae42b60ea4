"""This repo against the authors' release, measured alternately in one run.

  python benchmarks/against_release.py [--rounds=3] [--output=F.json]
      [--release_threads=2,1] [--steps=1,2,10,50,100] [--annotations=DIR]
      [--ours_args='...'] [--release_args='...']

Each round runs, as child processes one after the other, `speed.py` (ours, JAX, every
device JAX sees) and `release_speed.py` (the authors' code from MOMENTDIFF_RELEASE_DIR,
once per torch thread count), at the same Charades-STA SlowFast+CLIP shapes (train batch
32, inference batch 64). The order flips every round (ours first, then the release first)
so a machine whose load drifts hits both alike. Reported: every run's figures, the
median over rounds of each rate, and the ratios ours / release of those medians (and per
round), for training examples/s and inference queries/s at the step counts both measured;
beside them this machine's matmul roof (one 2048^2 float32 matmul in JAX, measured by
each speed.py run; torch's by each release run) and the 1-minute load average around
each run. Ours reads its compiled programs back from a compile cache made in the first
round (so its compile times are the first round's).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

import report   # a sibling: this folder is sys.path[0]
from momentdiff_jax.common import app

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FLAGS = flags.FlagValues()
flags.DEFINE_string('output', '', 'Write the comparison as JSON here.', flag_values=FLAGS)
flags.DEFINE_integer('rounds', 3, 'Rounds; each runs ours and the release once per thread '
                     'count, the order flipped every round.', flag_values=FLAGS)
flags.DEFINE_string('release_threads', '2,1',
                    'torch.set_num_threads of the release runs; each timed every round.',
                    flag_values=FLAGS)
flags.DEFINE_string('steps', '1,2,10,50,100', 'Ours: DDIM step counts.', flag_values=FLAGS)
flags.DEFINE_string('release_steps', '10,50', 'The release: DDIM step counts.',
                    flag_values=FLAGS)
flags.DEFINE_string('annotations', None, 'Passed to both (Charades-STA annotation files; '
                    'default: the shipped lengths table).', flag_values=FLAGS)
flags.DEFINE_string('ours_args', '', 'More flags for speed.py (space-separated).',
                    flag_values=FLAGS)
flags.DEFINE_string('release_args', '', 'More flags for release_speed.py.', flag_values=FLAGS)


def _median_rates(runs: list) -> dict:
  """Median over runs of train_examples_per_s and of each infer_queries_per_s entry."""
  steps = sorted(set.intersection(*[set(r['infer_queries_per_s']) for r in runs]), key=int)
  return {'train_examples_per_s': statistics.median(r['train_examples_per_s'] for r in runs),
          'infer_queries_per_s': {s: statistics.median(r['infer_queries_per_s'][s] for r in runs)
                                  for s in steps}}


def _ratios(ours: dict, release: dict) -> dict:
  """ours / release for the train rate and the step counts both hold."""
  return {'train_examples_per_s': ours['train_examples_per_s'] / release['train_examples_per_s'],
          'infer_queries_per_s': {s: ours['infer_queries_per_s'][s] / v
                                  for s, v in release['infer_queries_per_s'].items()
                                  if s in ours['infer_queries_per_s']}}


def combine(ours_runs: list, release_runs: dict) -> dict:
  """Medians and ratios of one comparison.

  ours_runs: speed.py JSONs, one per round; release_runs: {threads: release_speed.py
  JSONs, one per round}. Returns {'ours': medians, 'release': {threads: medians},
  'ratios': {threads: ours median / release median}, 'ratios_per_round': {threads:
  [ours round r / release round r]}, 'ratios_per_round_median': {threads: their median}}.
  """
  ours = _median_rates(ours_runs)
  out = {'ours': ours, 'release': {}, 'ratios': {}, 'ratios_per_round': {},
         'ratios_per_round_median': {}}
  for threads, runs in release_runs.items():
    if len(runs) != len(ours_runs):
      raise ValueError(f'{len(runs)} release runs ({threads} threads) for '
                       f'{len(ours_runs)} of ours: one each per round')
    med = out['release'][threads] = _median_rates(runs)
    out['ratios'][threads] = _ratios(ours, med)
    per = out['ratios_per_round'][threads] = [_ratios(_median_rates([o]), _median_rates([r]))
                                              for o, r in zip(ours_runs, runs)]
    out['ratios_per_round_median'][threads] = {
        'train_examples_per_s': statistics.median(p['train_examples_per_s'] for p in per),
        'infer_queries_per_s': {s: statistics.median(p['infer_queries_per_s'][s] for p in per)
                                for s in med['infer_queries_per_s']}}
  return out


def _run(cmd, env, out_path, log):
  """Run one child writing JSON to out_path; (its JSON, wall s, load before, load after)."""
  load0, t = os.getloadavg()[0], time.perf_counter()
  res = subprocess.run(cmd + [f'--output={out_path}'], env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if res.returncode != 0:
    raise SystemExit(f'{" ".join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n'
                     f'{res.stderr[-3000:]}')
  last = [l for l in res.stdout.splitlines() if l.strip()][-2:]
  log('    ' + '\n    '.join(last))
  with open(out_path) as f:
    return json.load(f), wall, load0, os.getloadavg()[0]


def commands(args) -> dict:
  """{run name: argv}: 'ours' and 'release_<threads>' per thread count."""
  ann = [f'--annotations={args.annotations}'] if args.annotations else []
  cmds = {'ours': [sys.executable, os.path.join(HERE, 'speed.py'), f'--steps={args.steps}']
                  + ann + args.ours_args.split()}
  for t in args.threads:
    cmds[f'release_{t}'] = ([sys.executable, os.path.join(HERE, 'release_speed.py'),
                             f'--threads={t}', f'--steps={args.release_steps}']
                            + ann + args.release_args.split())
  return cmds


def run_rounds(cmds: dict, rounds: int, log) -> tuple:
  """({run name: [its JSON per round]}, the order of each round). Ours reads its
  programs back from a compile cache made in the first round."""
  runs, order_log = {k: [] for k in cmds}, []
  with tempfile.TemporaryDirectory(prefix='against_release_') as tmp:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, 'jax_cache'))
    for r in range(rounds):
      order = list(cmds) if r % 2 == 0 else list(cmds)[::-1]
      order_log.append(order)
      for name in order:
        log(f'round {r + 1}/{rounds}: {name}')
        got, wall, l0, l1 = _run(cmds[name], env, os.path.join(tmp, f'{name}_{r}.json'), log)
        got.pop('per_device_count', None)   # per-bucket detail: speed.py --output keeps it
        got.update(wall_s=wall, load_average_1min_around=[l0, l1])
        runs[name].append(got)
  return runs, order_log


def report(args, cmds, runs, order_log) -> dict:
  """The JSON: machine, commands, the matmul roof, medians, ratios, every run."""
  res = combine(runs['ours'], {t: runs[f'release_{t}'] for t in args.threads})
  ours0 = runs['ours'][0]
  rel = lambda v: os.path.relpath(v, ROOT) if v.startswith(ROOT) else v
  return {
      'device': ours0['device'], 'jax_version': ours0['jax_version'],
      'torch_version': runs[f'release_{args.threads[0]}'][0]['torch_version'],
      'cpu_count': os.cpu_count(), 'rounds': args.rounds, 'run_order': order_log,
      'commands': {k: ' '.join(rel(c) for c in v[1:]) for k, v in cmds.items()},
      # The matmul roof: one 2048^2 float32 matmul in JAX, once per speed.py run.
      'matmul_roof_gflops': statistics.median(r['roof_gflops_measured'] for r in runs['ours']),
      'matmul_roof_gflops_each': [r['roof_gflops_measured'] for r in runs['ours']],
      'torch_matmul_gflops_each': {t: [r['matmul_2048_gflops_torch']
                                       for r in runs[f'release_{t}']] for t in args.threads},
      'train_examples_per_s': res['ours']['train_examples_per_s'],
      'infer_queries_per_s': res['ours']['infer_queries_per_s'],
      **res,
      'ours_compile_s_first_round': {'train': ours0['train_compile_s'],
                                     'sampler_by_steps': ours0['sampler_compile_s_by_steps']},
      'runs': runs,
  }


def _main():
  args = app.namespace(FLAGS)
  args.threads = [t.strip() for t in args.release_threads.split(',') if t.strip()]
  log = lambda s: print(s, flush=True)
  cmds = commands(args)
  runs, order_log = run_rounds(cmds, args.rounds, log)
  out = report(args, cmds, runs, order_log)
  for t in args.threads:
    rat, rel = out['ratios'][t], out['release'][t]
    log(f'release at {t} thread(s): train {rel["train_examples_per_s"]:.1f} ex/s, '
        f'ours {out["ours"]["train_examples_per_s"]:.1f} ({rat["train_examples_per_s"]:.2f}x); '
        + ', '.join(f'{s} steps {rel["infer_queries_per_s"][s]:.1f} q/s, ours '
                    f'{out["ours"]["infer_queries_per_s"][s]:.1f} ({v:.2f}x)'
                    for s, v in rat['infer_queries_per_s'].items()))
  log(f'medians over {args.rounds} rounds; matmul roof (2048^2 fp32, JAX) '
      f'{out["matmul_roof_gflops"]:.0f} GFLOP/s (each round: '
      + ', '.join(f'{g:.0f}' for g in out['matmul_roof_gflops_each']) + ')')
  report.write_result(args.output, out, log)
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
