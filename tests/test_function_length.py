"""No function over ~80 lines outside the configs: long functions get named helpers
(`train.train_and_evaluate` reads as the story of a run). Source text only, nothing
imported."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 80
TREES = ('momentdiff_jax', 'data_prep', 'benchmarks')
SCRIPTS = ('main.py', 'evaluate.py', 'predict.py', 'demo.py')
# A config is a list of settings, read top to bottom: its length is its content.
CONFIGS = {'momentdiff_jax/common/config_base.py:base_config'}


def _sources():
  for top in TREES:
    for d, _, files in os.walk(os.path.join(ROOT, top)):
      yield from (os.path.join(d, f) for f in sorted(files) if f.endswith('.py'))
  yield from (os.path.join(ROOT, f) for f in SCRIPTS if os.path.exists(os.path.join(ROOT, f)))


def function_lengths() -> dict:
  """{'path:name': lines} of every function and method (nested ones too)."""
  out = {}
  for path in _sources():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    rel = os.path.relpath(path, ROOT)
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        out[f'{rel}:{node.name}'] = node.end_lineno - node.lineno + 1
  return out


def test_no_function_over_the_limit():
  lengths = function_lengths()
  assert 'momentdiff_jax/train.py:train_and_evaluate' in lengths   # the scan sees the tree
  long = {k: n for k, n in lengths.items() if n > LIMIT and k not in CONFIGS}
  assert not long, f'functions over {LIMIT} lines (split them into named helpers): {long}'
