"""run.checkpointing.save_converted: weights before config, whole workdirs, no silent
overwrite."""
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from momentdiff_jax.run import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(scale):
  return {'params': {'dense': {'kernel': scale * np.arange(6, dtype=np.float32).reshape(2, 3),
                               'bias': np.full((3,), scale, np.float32)}}}


def _check_workdir(workdir, scale):
  assert checkpointing.load_config(workdir).scale == scale
  _, got, _ = checkpointing.restore_params(workdir)
  want = _params(scale)['params']['dense']
  for k in ('kernel', 'bias'):
    np.testing.assert_array_equal(np.asarray(got['params']['dense'][k]), want[k])


def _config(scale):
  return ml_collections.ConfigDict({'scale': scale})


def test_checkpoint_is_complete_before_config_json(tmp_path, monkeypatch):
  """At the moment config.json is written, the checkpoint it names restores whole; a
  crash right then leaves no workdir and no temporary folder."""
  real_write = checkpointing.atomic.write_text
  seen = []

  def write_then_die(path, text):
    folder = os.path.dirname(path)
    assert not os.path.exists(os.path.join(folder, 'config.json'))
    _, got, _ = checkpointing.restore_params(folder)   # complete already
    np.testing.assert_array_equal(np.asarray(got['params']['dense']['bias']),
                                  np.full((3,), 2.0))
    seen.append(folder)
    raise KeyboardInterrupt('killed between the checkpoint and config.json')
  monkeypatch.setattr(checkpointing.atomic, 'write_text', write_then_die)
  with pytest.raises(KeyboardInterrupt):
    checkpointing.save_converted(str(tmp_path / 'wd'), _config(2.0), _params(2.0))
  assert seen and os.path.basename(seen[0]).startswith('.tmp-wd-')
  assert os.listdir(tmp_path) == []
  monkeypatch.setattr(checkpointing.atomic, 'write_text', real_write)
  checkpointing.save_converted(str(tmp_path / 'wd'), _config(2.0), _params(2.0))
  _check_workdir(str(tmp_path / 'wd'), 2.0)
  assert os.listdir(tmp_path) == ['wd']


def test_sigkill_between_checkpoint_and_config_keeps_the_old_workdir(tmp_path):
  """A process killed (SIGKILL) just before config.json while replacing a workdir: the
  old workdir is intact and loads; the rerun replaces it; nothing else is lost."""
  wd = str(tmp_path / 'wd')
  checkpointing.save_converted(wd, _config(1.0), _params(1.0))
  code = (
      'import os, signal\n'
      'import ml_collections, numpy as np\n'
      'from momentdiff_jax.run import checkpointing\n'
      'from tests.test_checkpointing import _config, _params\n'
      'checkpointing.atomic.write_text = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n'
      f'checkpointing.save_converted({wd!r}, _config(3.0), _params(3.0), overwrite=True)\n')
  res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
  assert res.returncode == -9, res.stderr[-2000:]
  _check_workdir(wd, 1.0)
  left = [n for n in os.listdir(tmp_path) if n != 'wd']
  assert len(left) == 1 and left[0].startswith('.tmp-wd-')   # weights, no config.json
  assert not os.path.exists(tmp_path / left[0] / 'config.json')
  checkpointing.save_converted(wd, _config(3.0), _params(3.0), overwrite=True)
  _check_workdir(wd, 3.0)


def test_a_non_empty_workdir_is_refused_by_name(tmp_path):
  wd = tmp_path / 'wd'
  (wd / 'checkpoints').mkdir(parents=True)
  (wd / 'notes.txt').write_text('mine')
  with pytest.raises(FileExistsError, match=r'not empty \(it holds checkpoints/, notes.txt\)'
                     r'.*--overwrite'):
    checkpointing.save_converted(str(wd), _config(1.0), _params(1.0))
  assert sorted(os.listdir(wd)) == ['checkpoints', 'notes.txt']
  (tmp_path / 'file').write_text('')
  assert 'is a file' in checkpointing.converted_workdir_refusal(str(tmp_path / 'file'))
  checkpointing.save_converted(str(wd), _config(1.0), _params(1.0), overwrite=True)
  _check_workdir(str(wd), 1.0)
  assert sorted(os.listdir(wd)) == ['checkpoints', 'config.json']
  assert sorted(os.listdir(tmp_path)) == ['file', 'wd']
