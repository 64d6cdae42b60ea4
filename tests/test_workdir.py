"""A config that does not fit a workdir stops before anything runs, naming every key that
differs and both values; nothing under the workdir changes. Resume-safe keys pass."""
import hashlib
import os
import re
import shutil
import subprocess
import sys

import jax
import pytest

from configs import synthetic as synthetic_config
from momentdiff_jax import evaluation
from momentdiff_jax.data import dataset as dataset_lib
from momentdiff_jax.data import synthetic
from momentdiff_jax.run import checkpointing
from momentdiff_jax.run import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {'model.hidden_dim': 32, 'model.num_heads': 4, 'model.ffn_dim': 64}


def _config(data_dir, **changes):
  c = synthetic_config.get_config()
  c.data.dir = data_dir
  for key, value in {**TINY, **changes}.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return workdir_lib.with_dataset(c, dataset_lib.open_dataset(c))


def _snapshot(root):
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      with open(p, 'rb') as fh:
        out[os.path.relpath(p, root)] = (os.stat(p).st_mtime_ns,
                                         hashlib.sha1(fh.read()).hexdigest())
  return out


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A workdir (config.json + a params checkpoint of a 32-wide model) on a small
  synthetic dataset, and a second dataset with other feature dims."""
  root = tmp_path_factory.mktemp('wd')
  small = dict(num_train=24, num_val=8, num_test=8)
  ds = synthetic.write_synthetic(str(root / 'ds'), **small)
  other = synthetic.write_synthetic(str(root / 'ds16'), video_dim=16, **small)
  config = _config(ds)
  model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
  params = workdir_lib.init_params(model, config, jax.random.PRNGKey(0), config.video_dim,
                                   config.text_dim)
  wd = str(root / 'run')
  checkpointing.save_converted(wd, config, params)
  return wd, ds, other


def test_resume_refuses_keys_that_change_parameters(run):
  wd, ds, _ = run
  before = _snapshot(wd)
  config = _config(ds, **{'model.hidden_dim': 64, 'diffusion.num_spans': 7,
                          'learning_rate': 0.01, 'num_train_steps': 99})
  with pytest.raises(workdir_lib.ConfigMismatch) as e:
    workdir_lib.check_resume(wd, config)
  msg = str(e.value)
  assert 'diffusion.num_spans: workdir 5, now 7' in msg
  assert 'learning_rate: workdir 0.001, now 0.01' in msg
  assert 'model.hidden_dim: workdir 32, now 64' in msg
  assert 'num_train_steps' not in msg          # resume-safe: not among the refused keys
  assert _snapshot(wd) == before


def test_resume_accepts_and_reports_safe_keys(run):
  wd, ds, _ = run
  config = _config(ds, num_train_steps=500, log_every_steps=7,
                   **{'diffusion.sampling_steps': 2})
  assert workdir_lib.check_resume(wd, config) == [
      'diffusion.sampling_steps: 10 -> 2', 'log_every_steps: 100 -> 7',
      'num_train_steps: -1 -> 500']
  assert workdir_lib.check_resume(wd, _config(ds)) == []
  assert workdir_lib.check_resume(os.path.join(wd, 'fresh'), config) == []


def test_resume_refuses_a_dataset_with_other_dims(run):
  wd, ds, other = run
  with pytest.raises(workdir_lib.ConfigMismatch) as e:
    workdir_lib.check_resume(wd, _config(other))
  msg = str(e.value)
  assert f'data.dir: workdir "{ds}", now "{other}"' in msg
  assert 'video_dim: workdir 66, now 18' in msg      # 64 / 16 features + 2 TEF


def test_evaluate_overrides(run):
  wd, ds, other = run
  before = _snapshot(wd)
  cases = [({'model.hidden_dim': '64'},
            'cannot change at evaluation: model.hidden_dim (workdir 32, asked 64)'),
           ({'diffusion.num_spans': '3'}, 'diffusion.num_spans (workdir 5, asked 3)'),
           ({'data.dir': other}, f'the dataset {other} does not fit the trained model:\n'
                                 '  video_dim: workdir 66, dataset 18'),
           ({'model.hidden': '64'}, 'unknown keys: model.hidden'),
           ({'eval_batch_size': 'many'}, 'eval_batch_size=many: the workdir\'s value is 64')]
  for overrides, match in cases:
    with pytest.raises(workdir_lib.ConfigMismatch) as e:
      evaluation.evaluate_workdir(wd, 'test', overrides=overrides)
    assert match in str(e.value), (overrides, str(e.value))
  assert _snapshot(wd) == before and not os.path.exists(os.path.join(wd, 'eval'))
  c = workdir_lib.apply_overrides(checkpointing.load_config(wd),
                                  workdir_lib.parse_overrides(['eval_batch_size=8',
                                                               f'data.dir={ds}']))
  assert c.eval_batch_size == 8 and c.data.dir == ds
  # Python literals as ml_collections flags take them, and JSON.
  for text, want in (('False', False), ('false', False), ('True', True)):
    c = workdir_lib.apply_overrides(checkpointing.load_config(wd),
                                    workdir_lib.parse_overrides([f'round_windows={text}']))
    assert c.round_windows is want


@pytest.fixture(scope='module')
def edited(run, tmp_path_factory):
  """The workdir with config.json edited after training (ffn_dim 64 -> 48)."""
  copy = str(tmp_path_factory.mktemp('edited') / 'run')
  shutil.copytree(run[0], copy)
  config = checkpointing.load_config(copy)
  config.model.ffn_dim = 48
  with open(os.path.join(copy, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  return copy


def test_checkpoint_that_does_not_fit_config_json(edited):
  """Named before orbax is asked to restore (which would bury it in tracebacks)."""
  with pytest.raises(checkpointing.CheckpointMismatch) as e:
    workdir_lib.restore(edited)
  msg = str(e.value)
  assert os.path.join(edited, 'checkpoints', 'best', '0') in msg
  assert 'params/' in msg and 'stored (64,), config (48,)' in msg


def _cli(script, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], env=env,
                        capture_output=True, text=True, cwd=ROOT, check=False)


def _library_lines(r):
  """absl-formatted log lines (`I1129 09:36:44.1 ...`), as orbax and tfds write them."""
  return [l for l in (r.stdout + r.stderr).splitlines()
          if re.match(r'[IWE]\d{4} .*\.py:\d+\]', l)]


def test_cli_errors_are_one_message_and_change_nothing(run, edited):
  wd, ds, _ = run
  before = _snapshot(wd), _snapshot(edited)
  flags = [f'--config.{k}={v}' for k, v in TINY.items() if k != 'model.hidden_dim']
  r = _cli('main.py', '--config=configs/synthetic.py', f'--workdir={wd}',
           f'--config.data.dir={ds}', '--config.model.hidden_dim=64', *flags)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  assert 'main.py: error:' in r.stderr and 'model.hidden_dim: workdir 32, now 64' in r.stderr
  r = _cli('evaluate.py', f'--workdir={edited}')
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  assert 'evaluate.py: error:' in r.stderr and 'stored (64,), config (48,)' in r.stderr
  # Library logs (orbax opening the checkpoint) are off by default, back with --verbosity.
  assert not _library_lines(r)
  r = _cli('evaluate.py', f'--workdir={edited}', '--verbosity=0')
  assert r.returncode == 1 and 'stored (64,), config (48,)' in r.stderr
  assert any('checkpoint_manager.py' in l for l in _library_lines(r))
  assert (_snapshot(wd), _snapshot(edited)) == before
