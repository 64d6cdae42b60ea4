"""Accuracy of a training recipe over seeds, next to the oracle (docs/recipe.md).

  python benchmarks/accuracy.py --recipe=release|plus|<candidates joined by +>
      [--num_seeds=3] [--data=mdbench_v1|mdbench_v2|mdbench_v3|synthetic] [--output=FILE.json]
      [--eval_variants=draws,draws_nms] [--time_steps=10] [--workdir=DIR]

Trains K seeds in one program (`config.num_seeds`, configs/benchmark.py's fixed
budget; configs/synthetic.py's for --data=synthetic), keeps each seed's checkpoint
with the best validation mAP (the test split chooses nothing), and prints test mean ±
std and the worst seed of R1@0.5, R1@0.7 and mAP, the oracle's scores on the same test
queries (mdbench data), and the train step time of K replicas next to the release
recipe's, both timed in this process on the same batches. `--eval_variants` also
scores the same best checkpoints with a candidate's sampling settings (val and test),
so sampling-only candidates need no training run of their own.
"""
import json
import os
import statistics
import sys
import tempfile
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import report   # a sibling: this folder is sys.path[0]
from momentdiff_jax import evaluation
from momentdiff_jax import train
from momentdiff_jax.common import app
from momentdiff_jax.common import config_base
from momentdiff_jax.common import recipes
from momentdiff_jax.data import dataset as dataset_lib
from momentdiff_jax.data import store
from momentdiff_jax.ops import diffusion
from momentdiff_jax.ops import metrics as metrics_lib
from momentdiff_jax.run import compile_cache
from momentdiff_jax.run import mesh as mesh_lib
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ('MR-full-R1@0.5', 'MR-full-R1@0.7', 'MR-full-mAP')

FLAGS = flags.FlagValues()
flags.DEFINE_string('recipe', 'release', 'release, plus, or candidates of '
                    'momentdiff_jax.common.recipes joined by "+".', flag_values=FLAGS)
flags.DEFINE_integer('num_seeds', 3, 'Seeds trained in one program.', flag_values=FLAGS)
flags.DEFINE_string('data', 'mdbench_v1', 'mdbench_v1 | mdbench_v2 | mdbench_v3 | synthetic.',
                    flag_values=FLAGS)
flags.DEFINE_string('output', '', 'Also write the results as JSON here.', flag_values=FLAGS)
flags.DEFINE_string('workdir', '', 'Run folder (default: a new temporary one).',
                    flag_values=FLAGS)
flags.DEFINE_string('eval_variants', '', 'Candidates whose sampling settings also score '
                    'the best checkpoints, comma-separated (e.g. draws,draws_nms).',
                    flag_values=FLAGS)
flags.DEFINE_integer('time_steps', 10, 'Timed train steps of the recipe and the release '
                     '(0: no timing).', flag_values=FLAGS)
flags.DEFINE_integer('num_epochs', 0, 'Budget override (0: the config\'s).', flag_values=FLAGS)
flags.DEFINE_bool('variants_only', False, 'Train nothing: score --eval_variants on the '
                  'finished run in --workdir and add them to its JSON, --output.',
                  flag_values=FLAGS)


def base_config(data: str):
  name = 'synthetic.py' if data == 'synthetic' else 'benchmark.py'
  c = config_base.load_config(os.path.join(ROOT, 'configs', name))
  if data != 'synthetic':
    c.data.name = data
  return c


def summarize(per_seed: list) -> dict:
  """{key: {mean, std, worst, seeds}} over the seeds' brief metrics."""
  out = {}
  for k in KEYS:
    vals = [float(b[k]) for b in per_seed]
    out[k] = {'mean': round(statistics.fmean(vals), 2),
              'std': round(statistics.stdev(vals), 2) if len(vals) > 1 else 0.0,
              'worst': round(min(vals), 2), 'seeds': vals}
  return out


def per_seed_briefs(final: dict, split: str, k: int) -> list:
  if k == 1:
    return [{key: final[f'final_{split}/{key}'] for key in KEYS}]
  return [{key: final[f'r{i}/final_{split}/{key}'] for key in KEYS} for i in range(k)]


def oracle_scores(data_dir: str, split: str, name: str):
  path = os.path.join(data_dir, f'oracle_{split}_preds.jsonl')
  if not os.path.exists(path):
    return None
  preds = metrics_lib.load_jsonl(path)
  rows = store.load_rows(data_dir, split)
  brief = metrics_lib.compute_metrics(preds, rows, name)['brief']
  return {k: brief[k] for k in KEYS}


def time_steps(configs: dict, k: int, n: int) -> dict:
  """Seconds per train step of K replicas for each config, alternating on the same
  batches after one warm-up (compile) call each; median of n."""
  cfg0 = next(iter(configs.values()))
  dataset = dataset_lib.open_dataset(cfg0)
  mesh = mesh_lib.make_mesh(k)
  rsh, data_sh = mesh_lib.replica_sharding(mesh), mesh_lib.data_sharding(mesh)
  it = dataset.train_iterator(cfg0.batch_size)
  batches = [mesh_lib.global_batch(it.next(), mesh) for _ in range(n + 1)]
  steps, states = {}, {}
  for name, cfg in configs.items():
    cfg = workdir_lib.with_dataset(recipes.apply_recipe(cfg), dataset)
    model = workdir_lib.create_model(cfg, cfg.video_dim, cfg.text_dim)
    tx = ts.make_optimizer(cfg, it.steps_per_epoch)
    keys = jax.random.split(jax.random.PRNGKey(0), k)
    params = jax.vmap(lambda r: workdir_lib.init_params(model, cfg, r, cfg.video_dim,
                                                        cfg.text_dim))(keys)
    states[name] = ts.TrainState(step=jnp.zeros((k,), jnp.int32), params=params,
                                 opt_state=jax.vmap(tx.init)(params))
    steps[name] = jax.jit(ts.make_train_step(
        model, cfg, diffusion.make_schedule(cfg.diffusion), it.steps_per_epoch),
        in_shardings=(rsh, data_sh, rsh, rsh), out_shardings=(rsh, rsh), donate_argnums=(0,))
  times = {name: [] for name in configs}
  for i, batch in enumerate(batches):
    for name in configs:
      t = time.perf_counter()
      states[name], parts = steps[name](states[name], batch, keys, {})
      jax.block_until_ready(parts)
      if i > 0:
        times[name].append(time.perf_counter() - t)
  return {name: statistics.median(v) for name, v in times.items()}


def eval_variant(workdir: str, settings: dict, k: int) -> dict:
  """Val and test briefs per seed of the run's best checkpoints sampled with `settings`."""
  over = {key: json.dumps(v) if isinstance(v, str) else str(v) for key, v in settings.items()}
  out = {}
  for split in ('val', 'test'):
    agg = evaluation.evaluate_workdir(workdir, split, overrides=over)
    reps = agg['replicas'] if k > 1 else [agg]
    out[split] = [{key: r['brief'][key] for key in KEYS} for r in reps]
  return out


def fmt(summary: dict) -> str:
  return ' | '.join(f'{k.replace("MR-full-", "")} {v["mean"]:.2f} ± {v["std"]:.2f} '
                    f'(worst {v["worst"]:.2f})' for k, v in summary.items())


def add_variants(args) -> int:
  """--variants_only: the run's JSON (--output) gains --eval_variants' rows, each with
  the command that scored it."""
  if not (args.workdir and args.output and os.path.exists(args.output) and args.eval_variants):
    raise app.UsageError('--variants_only needs --workdir (a finished run), --output (its '
                         'JSON) and --eval_variants')
  with open(args.output) as f:
    res = json.load(f)
  cmd = (f'python benchmarks/accuracy.py --variants_only --workdir=RUN_DIR '
         f'--eval_variants={args.eval_variants}')
  for name in [v for v in args.eval_variants.split(',') if v]:
    briefs = eval_variant(args.workdir, recipes.recipe_settings(name), res['num_seeds'])
    res['variants'][name] = {s: summarize(b) for s, b in briefs.items()}
    res.setdefault('variant_commands', {})[name] = cmd
    print(f'variant {name}: val {fmt(res["variants"][name]["val"])}\n'
          f'{" " * (10 + len(name))}test {fmt(res["variants"][name]["test"])}')
  report.write_result(args.output, res)
  return 0


def _main():
  args = app.namespace(FLAGS)
  compile_cache.enable(None)
  if args.variants_only:
    return add_variants(args)
  config = base_config(args.data)
  config.recipe = args.recipe
  config.num_seeds = args.num_seeds
  if args.num_epochs:
    config.num_epochs = args.num_epochs
  try:
    settings = recipes.recipe_settings(args.recipe)   # an unknown name fails here
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  workdir = args.workdir or tempfile.mkdtemp(prefix=f'accuracy_{args.recipe}_')
  t0 = time.time()
  final = train.train_and_evaluate(config, workdir)
  wall = time.time() - t0
  k = args.num_seeds
  res = {'recipe': args.recipe, 'settings': settings, 'data': args.data, 'num_seeds': k,
         'num_epochs': config.num_epochs, 'train_and_eval_wall_s': round(wall, 1),
         'command': (f'python benchmarks/accuracy.py --recipe={args.recipe} --num_seeds={k} '
                     f'--data={args.data}' + (f' --num_epochs={args.num_epochs}'
                                              if args.num_epochs else '')
                     + (f' --eval_variants={args.eval_variants}' if args.eval_variants else '')),
         'val': summarize(per_seed_briefs(final, 'val', k)),
         'test': summarize(per_seed_briefs(final, 'test', k))}
  data_dir = json.load(open(os.path.join(workdir, 'config.json')))['data']['dir']
  res['oracle_test'] = oracle_scores(data_dir, 'test', config.data.name)
  res['oracle_val'] = oracle_scores(data_dir, 'val', config.data.name)
  res['variants'] = {}
  for name in [v for v in args.eval_variants.split(',') if v]:
    briefs = eval_variant(workdir, recipes.recipe_settings(name), k)
    res['variants'][name] = {s: summarize(b) for s, b in briefs.items()}
  if args.time_steps > 0:
    release = base_config(args.data)
    sec = time_steps({'recipe': config, 'release': release}, k, args.time_steps)
    res['step_s'] = {'recipe': round(sec['recipe'], 4), 'release': round(sec['release'], 4),
                     'ratio': round(sec['recipe'] / sec['release'], 3), 'replicas': k}
  print(f'\n== {args.recipe} on {args.data}, {k} seeds, {config.num_epochs} epochs '
        f'({wall / 60:.1f} min train + eval)')
  print('val : ' + fmt(res['val']))
  print('test: ' + fmt(res['test']))
  if res['oracle_test']:
    print('oracle test: ' + ', '.join(f'{k} {v:.2f}' for k, v in res['oracle_test'].items()))
  for name, v in res['variants'].items():
    print(f'variant {name}: val {fmt(v["val"])}\n{" " * (10 + len(name))}test {fmt(v["test"])}')
  if 'step_s' in res:
    s = res['step_s']
    print(f'train step ({k} replicas): {s["recipe"] * 1e3:.0f} ms vs release '
          f'{s["release"] * 1e3:.0f} ms (x{s["ratio"]:.2f})')
  report.write_result(args.output, res)
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
