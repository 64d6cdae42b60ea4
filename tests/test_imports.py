"""The package's import graph flows one way: entry points -> train -> evaluation ->
workdir -> checkpointing / model, with no cycle hidden behind a function-body import."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, 'momentdiff_jax')


def _module_name(path):
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
  return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _imports(path, modules):
  """(top-level imported package modules, function-body imported package modules)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  top, inner = set(), set()
  func_nodes = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      func_nodes.update(id(n) for n in ast.walk(node) if n is not node)
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      # `from momentdiff_jax import train` imports the submodule `momentdiff_jax.train`;
      # `from momentdiff_jax.model import MomentDiff` the module `momentdiff_jax.model`.
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules
               else node.module for a in node.names]
    names = [n for n in names if n.startswith('momentdiff_jax')]
    (inner if id(node) in func_nodes else top).update(names)
  return top, inner


def _graph():
  files = {}
  for d, _, fs in os.walk(PKG):
    for f in fs:
      if f.endswith('.py'):
        files[_module_name(os.path.join(d, f))] = os.path.join(d, f)
  top, inner = {}, {}
  for mod, path in files.items():
    t, i = _imports(path, files)
    top[mod] = {n for n in t if n in files and n != mod}
    inner[mod] = {n for n in i if n in files and n != mod}
  return top, inner


def _reaches(graph, start):
  seen, todo = set(), [start]
  while todo:
    for n in graph.get(todo.pop(), ()):
      if n not in seen:
        seen.add(n)
        todo.append(n)
  return seen


def test_no_cycle_even_counting_function_body_imports():
  top, inner = _graph()
  full = {m: top[m] | inner[m] for m in top}
  cycles = sorted(m for m in full if m in _reaches(full, m))
  assert not cycles, f'modules on an import cycle: {cycles}'


def test_library_modules_do_not_import_train():
  top, inner = _graph()
  full = {m: top[m] | inner[m] for m in top}
  for mod in ('momentdiff_jax.evaluation', 'momentdiff_jax.inference.predictor',
              'momentdiff_jax.run.workdir', 'momentdiff_jax.run.checkpointing'):
    assert 'momentdiff_jax.train' not in _reaches(full, mod), mod
  assert 'momentdiff_jax.run.workdir' in top['momentdiff_jax.evaluation']
  assert 'momentdiff_jax.run.workdir' in top['momentdiff_jax.inference.predictor']


def _layer_map():
  """{folder or '': allowed folders} read from the table that opens docs/DESIGN.md."""
  with open(os.path.join(ROOT, 'docs', 'DESIGN.md')) as f:
    text = f.read()
  table = text.split('## The layers', 1)[1].split('\n## ', 1)[0]
  allowed, layer = {}, {}
  for line in table.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) != 4 or not cells[1].isdigit():
      continue
    folder = cells[0].strip('`').rstrip('/')
    folder = '' if folder == 'top-level modules' else folder
    allowed[folder], layer[folder] = cells[3], int(cells[1])
  # 'everything above': every row of a lower layer ('' = the top-level modules).
  return {f: ({g.strip() for g in a.split(',')} - {'–', ''} if a != 'everything above'
              else {g for g in layer if layer[g] < layer[f]}) for f, a in allowed.items()}


def _folder(mod):
  parts = mod.split('.')
  return parts[1] if len(parts) > 2 or (len(parts) == 2 and os.path.isdir(
      os.path.join(PKG, parts[1]))) else ''


def test_design_map_covers_every_folder():
  layers = _layer_map()
  on_disk = {d for d in os.listdir(PKG) if os.path.isdir(os.path.join(PKG, d))
             and os.path.exists(os.path.join(PKG, d, '__init__.py'))}
  assert on_disk == set(layers) - {''}, (
      f'docs/DESIGN.md layer table lists {sorted(set(layers) - {""})}, the package has '
      f'{sorted(on_disk)}')


def test_every_import_respects_the_layer_map():
  layers = _layer_map()
  top, inner = _graph()
  bad = []
  for mod in top:
    src = _folder(mod)
    for dep in top[mod] | inner[mod]:
      dst = _folder(dep)
      if dst != src and dst not in layers[src] and dep != 'momentdiff_jax':
        bad.append(f'{mod} -> {dep}')
  assert not bad, f'imports against the layer map of docs/DESIGN.md: {bad}'


def test_layer_rule_catches_an_upward_import():
  # The checker itself: run layer may not import from inference.
  layers = _layer_map()
  assert 'inference' not in layers['run'] and 'features' not in layers['data']
  assert _folder('momentdiff_jax.inference.predictor') == 'inference'
  assert _folder('momentdiff_jax.train') == ''
  # The drivers may not import a command; the commands may import the drivers.
  assert 'cli' not in layers[''] and '' in layers['cli']
