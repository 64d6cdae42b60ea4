"""The ablation table of docs/recipe.md, made from `benchmarks/accuracy.py`'s JSON files.

  python benchmarks/recipe_table.py --files=benchmarks/results/accuracy/release_v1.json,...

One markdown row per run (and per sampling variant scored on a run's checkpoints):
test mean ± std of R1@0.5, R1@0.7 and mAP, the worst seed's R1@0.5, the val means the
choice was made on, the train step time next to the release recipe's (timed in the same
run), and the command that made the row. The oracle's line comes from the first file
that has one. Every figure of the table is read from a file; none is typed by hand.
"""
import json
import sys

from absl import flags

from momentdiff_jax.common import app
from momentdiff_jax.common import recipes

FLAGS = flags.FlagValues()
flags.DEFINE_list('files', [], 'JSON files of benchmarks/accuracy.py, in table order.',
                  flag_values=FLAGS)
KEYS = ('MR-full-R1@0.5', 'MR-full-R1@0.7', 'MR-full-mAP')
HEADER = ('| run | data | test R1@0.5 | test R1@0.7 | test mAP | worst seed R1@0.5 | '
          'val R1@0.5 / R1@0.7 / mAP | step time vs release | command |\n'
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- |')


def _ms(s: dict) -> str:
  return f'{s["mean"]:.2f} ± {s["std"]:.2f}'


def row(name: str, res: dict, test: dict, val: dict, ratio: str, command: str) -> str:
  """One markdown row; `test` / `val`: {key: {mean, std, worst}}."""
  vals = ' / '.join(f'{val[k]["mean"]:.2f}' for k in KEYS)
  return (f'| {name} | {res["data"]} | {_ms(test[KEYS[0]])} | {_ms(test[KEYS[1]])} | '
          f'{_ms(test[KEYS[2]])} | {test[KEYS[0]]["worst"]:.2f} | {vals} | {ratio} | '
          f'`{command}` |')


def label(res: dict) -> str:
  """The run's recipe name; when that name now means other settings than the run's
  (a recipe redefined since), the candidates the run's settings were made of."""
  name, settings = res['recipe'], res.get('settings')
  try:
    if settings is None or recipes.recipe_settings(name) == settings:
      return name
  except ValueError:
    pass
  items = lambda c: set(recipes.CANDIDATES[c].items())
  have = {c for c in recipes.CANDIDATES if items(c) <= set(settings.items())}
  parts = sorted(c for c in have if not any(items(c) < items(d) for d in have))
  return f'{"+".join(parts)} (run as {name!r})'


def rows(res: dict, path: str) -> list:
  """The run's row, then one per sampling variant (same checkpoints, same ratio)."""
  step = res.get('step_s')
  ratio = f'x{step["ratio"]:.2f}' if step else 'not timed'
  cmd = res['command'] + f' --output={path}'
  name = label(res)
  out = [row(name, res, res['test'], res['val'], ratio, cmd)]
  for variant, v in sorted(res.get('variants', {}).items()):
    vcmd = res.get('variant_commands', {}).get(variant)
    vcmd = (vcmd.replace('RUN_DIR', f'<{res["recipe"]} run>') + f' --output={path}'
            if vcmd else cmd)
    out.append(row(f'{name} + {variant} (sampling only, same checkpoints)', res,
                   v['test'], v['val'], ratio, vcmd))
  return out


def table(paths: list) -> str:
  """Markdown: the oracle line(s) and every run's rows, in the order of `paths`."""
  lines, oracles = [HEADER], {}
  for p in paths:
    with open(p) as f:
      res = json.load(f)
    if res.get('oracle_test') and res['data'] not in oracles:
      oracles[res['data']] = res['oracle_test']
    lines.extend(rows(res, p))
  for data, o in oracles.items():
    lines.insert(1, f'| oracle | {data} | {o[KEYS[0]]:.2f} | {o[KEYS[1]]:.2f} | '
                 f'{o[KEYS[2]]:.2f} | – | – | – | printed by every run |')
  return '\n'.join(lines)


def _main():
  files = app.namespace(FLAGS).files
  if not files:
    raise app.UsageError('--files: the JSON files of benchmarks/accuracy.py')
  print(table(files))
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
