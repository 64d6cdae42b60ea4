"""The commands: console scripts declared in setup.py, one absl style, thin scripts.

Checked without installing (reinstalling the editable package would change the
environment of everyone sharing it): setup.py's `setup(...)` arguments are captured,
and every console script's target is imported and run with `--help` in-process.
"""
import ast
import importlib
import os
import re
import runpy
import subprocess
import sys

import pytest
import setuptools

from momentdiff_jax.common import app
from tests import data_fixtures as fx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The scripts users type, and the console script each one is the same command as.
SCRIPTS = {
    'main.py': 'momentdiff-train',
    'evaluate.py': 'momentdiff-evaluate',
    'predict.py': 'momentdiff-predict',
    'demo.py': 'momentdiff-demo',
    'data_prep/build_dataset.py': 'momentdiff-build',
    'data_prep/extract_features.py': 'momentdiff-extract',
    'data_prep/convert_torch_checkpoint.py': 'momentdiff-convert',
    'data_prep/make_antibias_splits.py': 'momentdiff-antibias',
    'data_prep/restore_antibias_qids.py': 'momentdiff-restore-qids',
}


@pytest.fixture(scope='module')
def console_scripts():
  """{name: 'module:function'} from setup.py's entry_points, setup() not run."""
  captured = {}
  saved = setuptools.setup
  setuptools.setup = lambda **kw: captured.update(kw)
  try:
    runpy.run_path(os.path.join(ROOT, 'setup.py'))
  finally:
    setuptools.setup = saved
  pairs = [line.split('=') for line in captured['entry_points']['console_scripts']]
  return {name.strip(): target.strip() for name, target in pairs}


def test_every_command_is_a_console_script(console_scripts):
  want = set(SCRIPTS.values()) | {'momentdiff-summary'}
  assert want <= set(console_scripts), sorted(want - set(console_scripts))
  for name, target in console_scripts.items():
    assert name.startswith('momentdiff-') and target.count(':') == 1, (name, target)


def test_each_target_runs_help(console_scripts, capsys):
  for name, target in sorted(console_scripts.items()):
    module, func = target.split(':')
    mod = importlib.import_module(module)
    assert callable(getattr(mod, func)), target
    assert getattr(mod, func)(['--help']) == 0, name
    out = capsys.readouterr().out
    # The docstring first, then this command's own flags (not only absl's).
    assert out.startswith(mod.__doc__.strip().splitlines()[0]), name
    own = [f for f in mod.FLAGS if mod.FLAGS.find_module_defining_flag(f) == module]
    assert own and all(re.search(rf'--(\[no\])?{f}:', out) for f in own), (name, own)
    assert '--verbosity' in out, name


def test_scripts_call_the_console_scripts_main(console_scripts):
  """`python main.py` etc. are wrappers: they import the same module as the console
  script and call its main; nothing else (no flags, no sys.path edits)."""
  for script, name in SCRIPTS.items():
    module = console_scripts[name].split(':')[0]
    with open(os.path.join(ROOT, script)) as f:
      tree = ast.parse(f.read())
    imported = [(n.module, [a.name for a in n.names]) for n in tree.body
                if isinstance(n, ast.ImportFrom)]
    assert imported == [(module, ['main'])], (script, imported)
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign))]
    assert not defs, f'{script} defines {[ast.dump(d)[:40] for d in defs]}'


# The authors' release is not a package: the code that imports it puts its folder on
# sys.path (tests use monkeypatch.syspath_prepend). Nothing else may.
SYS_PATH_ALLOWED = {'benchmarks/release_speed.py'}


def test_no_script_edits_sys_path():
  hits = []
  for d, dirs, files in os.walk(ROOT):
    dirs[:] = [x for x in dirs if not x.startswith('.') and x not in ('build', 'dist')
               and not x.endswith('.egg-info')]
    for f in files:
      if f.endswith('.py') and f != 'test_cli.py':
        text = open(os.path.join(d, f)).read()
        if 'sys.path.insert(' in text or 'sys.path.append(' in text:
          hits.append(os.path.relpath(os.path.join(d, f), ROOT))
  assert not set(hits) - SYS_PATH_ALLOWED, hits


def test_one_command_line_style():
  """Every command parses absl flags through common.app (docs/DESIGN.md, "Commands");
  argparse survives only as the Namespace class the release's checkpoints pickle."""
  hits = []
  for d, dirs, files in os.walk(ROOT):
    dirs[:] = [x for x in dirs if not x.startswith('.') and x not in ('build', 'dist')]
    for f in files:
      path = os.path.join(d, f)
      if f.endswith('.py') and f != 'test_cli.py' and 'ArgumentParser(' in open(path).read():
        hits.append(os.path.relpath(path, ROOT))
  assert not hits, (f'{hits} parse with argparse: define absl flags on a FlagValues and run '
                    'them with momentdiff_jax.common.app.run, as benchmarks/speed.py does')


def test_usage_errors_exit_2_naming_the_flag():
  """Through the script, as a user types it: unknown and missing flags."""
  def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
  r = run('data_prep/make_antibias_splits.py', '--kind=len', '--train=a', '--test=b',
          '--output=c', '--bogus=1')
  assert r.returncode == 2 and "make_antibias_splits.py: error: Unknown command line flag " \
      "'bogus'" in r.stderr, r.stderr
  r = run('data_prep/make_antibias_splits.py', '--kind=len', '--train=a', '--test=b')
  assert r.returncode == 2 and '--output' in r.stderr and 'Traceback' not in r.stderr
  r = run('data_prep/make_antibias_splits.py', '--kind=wide', '--train=a', '--test=b',
          '--output=c')
  assert r.returncode == 2 and '--kind=wide' in r.stderr and 'len|mom' in r.stderr


def test_a_command_called_twice_starts_from_its_defaults(tmp_path, capsys):
  """In-process calls (tests, notebooks): the second call sees none of the first's
  flags, `--config.KEY` overrides included."""
  from momentdiff_jax.cli import antibias as cmd
  train = fx.fixture('annotations', 'charades', 'charades_sta_train_tvr_format.jsonl')
  test = fx.fixture('annotations', 'charades', 'charades_sta_test_tvr_format.jsonl')
  base = ['--kind=mom', f'--train={train}', f'--test={test}']
  assert cmd.main(base + [f'--output={tmp_path / "a"}', '--seed=3']) == 0
  assert cmd.main(base + [f'--output={tmp_path / "b"}']) == 0
  out = capsys.readouterr().out
  assert '(seed 3)' in out and '(seed 0)' in out
  assert sorted(os.listdir(tmp_path / 'a')) == ['test_mom_80.jsonl', 'train_mom_80.jsonl']

  from momentdiff_jax.cli import train as train_cmd
  config = os.path.join(ROOT, 'configs', 'synthetic.py')
  for hidden in (48, 40):
    app.parse(train_cmd.FLAGS, [f'--config={config}', f'--config.model.hidden_dim={hidden}'])
    assert train_cmd.FLAGS.config.model.hidden_dim == hidden
  app.parse(train_cmd.FLAGS, [f'--config={config}', '--workdir=/x'])
  assert train_cmd.FLAGS.config.model.hidden_dim == 64 and train_cmd.FLAGS.workdir == '/x'
  app.parse(train_cmd.FLAGS, [f'--config={config}'])
  assert train_cmd.FLAGS.workdir == 'workdirs/synthetic'
  with pytest.raises(app.UsageError, match='no such config field'):
    app.parse(train_cmd.FLAGS, [f'--config={config}', '--config.no_such_key=1'])


def test_benchmark_scripts_share_the_style():
  """Every benchmarks/*.py with a main: absl flags run by common.app (`--help` works),
  imported as `python benchmarks/x.py` imports them (their folder first on sys.path)."""
  names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, 'benchmarks'))
                 if f.endswith('.py'))
  code = ('import importlib, sys\n'
          'from momentdiff_jax.common import app\n'
          'for name in sys.argv[1:]:\n'
          '  mod = importlib.import_module(name)\n'
          '  if hasattr(mod, "main"):\n'
          '    assert isinstance(mod.FLAGS, app.flags.FlagValues), name\n'
          '    assert mod.main(["--help"]) == 0, name\n'
          '    print("ok", name)\n')
  r = subprocess.run([sys.executable, '-c', code, *names], capture_output=True, text=True,
                     cwd=os.path.join(ROOT, 'benchmarks'), env=dict(os.environ,
                                                                   JAX_PLATFORMS='cpu'))
  assert r.returncode == 0, r.stderr[-3000:]
  checked = [l.split()[1] for l in r.stdout.splitlines() if l.startswith('ok ')]
  assert {'speed', 'speed_inputs', 'step_breakdown', 'input_pipeline'} <= set(checked), checked
