"""End to end: main.py trains, checkpoints, resumes after SIGKILL to the same numbers."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model.hidden_dim=32', '--config.model.num_heads=4',
        '--config.model.ffn_dim=64', '--config.batch_size=16', '--config.eval_batch_size=100',
        '--config.num_train_steps=30', '--config.checkpoint_every_steps=10',
        '--config.eval_every_steps=30', '--config.log_every_steps=5',
        '--config.diffusion.sampling_steps=2']


def _env(tmp_path):
  env = dict(os.environ)
  # Reuse compiled programs across the runs of this test (CPU, same flags).
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'jax_cache')
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _cmd(workdir):
  return [sys.executable, os.path.join(ROOT, 'main.py'), '--config',
          os.path.join(ROOT, 'configs', 'synthetic.py'), f'--workdir={workdir}'] + TINY


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f if l.strip()]


def _latest_steps(workdir):
  d = os.path.join(workdir, 'checkpoints', 'latest')
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _assert_same_rows(full, killed):
  """metrics.jsonl of a killed-and-resumed run equals the uninterrupted run's, row by row."""
  a, b = _rows(full), _rows(killed)
  assert [r['step'] for r in a] == [r['step'] for r in b]
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for k in ra:
      assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-6), (ra['step'], k)
  return a


def test_sigkill_resume_equals_uninterrupted(tmp_path):
  env = _env(tmp_path)
  full = tmp_path / 'full'
  r = subprocess.run(_cmd(full), env=env, check=True, capture_output=True, text=True,
                     cwd=ROOT)
  # The console: progress, evaluations, results; no Python library logs (absl format,
  # `I1129 09:33:06.49 123 checkpoint_manager.py:701] ...`). XLA's C++ "slow compile"
  # banner, printed when a loaded machine compiles for minutes, is not ours to hide.
  lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip() and not (
      '.cc:' in l or l.startswith('*****') or l.startswith('[Compiling module'))]
  assert not [l for l in lines if re.match(r'[IWE]\d{4} .*\.py:\d+\]', l)], lines
  assert any(l.startswith('step 30/30 | loss ') and 'ETA' in l for l in lines)
  assert any(l.startswith('test (best checkpoint): {"MR-full-R1@0.1"') for l in lines)
  assert len(lines) <= 15, lines

  killed = tmp_path / 'killed'
  proc = subprocess.Popen(_cmd(killed), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not _latest_steps(killed) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, 'run finished before it could be killed'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  resume_from = _latest_steps(killed)[-1]
  assert resume_from < 30
  r = subprocess.run(_cmd(killed), env=env, check=True, capture_output=True, text=True,
                     cwd=ROOT)
  # The resumed run found the train step and samplers in the persistent cache.
  summary = [l for l in r.stdout.splitlines() if l.startswith('compiled ')]
  assert len(summary) == 1 and f'read from the cache {tmp_path / "jax_cache"}' in summary[0]
  assert int(summary[0].split('(')[1].split()[0]) >= 3, summary

  _assert_same_rows(full, killed)
  with open(full / 'eval' / 'test_metrics.json') as f:
    ma = json.load(f)
  with open(killed / 'eval' / 'test_metrics.json') as f:
    mb = json.load(f)
  assert ma['brief'] == mb['brief']
  for name in ('config.json', 'eval/val_preds.jsonl', 'eval/test_preds.jsonl'):
    assert (full / name).exists() and (killed / name).exists()
  assert os.path.isdir(full / 'checkpoints' / 'best')


def test_evaluate_and_predictor_on_trained_workdir(tmp_path):
  """evaluate.py --plots writes the figures; Predictor handles 7- and 300-clip videos."""
  import numpy as np
  env = _env(tmp_path)
  wd = tmp_path / 'wd'
  subprocess.run(_cmd(wd) + ['--config.num_train_steps=10'], env=env, check=True,
                 capture_output=True, cwd=ROOT)
  res = subprocess.run([sys.executable, os.path.join(ROOT, 'evaluate.py'), f'--workdir={wd}',
                        '--split=test', '--plots', '--sampling_steps=3'],
                       env=env, check=True, capture_output=True, text=True, cwd=ROOT)
  assert 'MR-full-R1@0.5' in res.stdout
  from matplotlib import image
  for name in ('test_distributions.png', 'test_trajectories.png'):
    img = image.imread(str(wd / 'eval' / name))
    assert img.shape[0] >= 300 and img.shape[1] >= 400, (name, img.shape)
  with open(wd / 'eval' / 'test_metrics.json') as f:
    assert 'MR-full-mAP' in json.load(f)['brief']

  from momentdiff_jax import Predictor
  p = Predictor.from_workdir(str(wd))
  rng = np.random.default_rng(0)
  for clips, dur in ((7, 7.0), (300, 301.5)):
    out = p.predict(rng.normal(size=(clips, p.feature_dim)),
                    rng.normal(size=(9, p.config.text_dim)), duration=dur)
    wins = np.asarray(out['pred_relevant_windows'])
    assert wins.shape[1] == 3 and len(wins) >= 1
    assert (wins[:, 0] >= 0).all() and (wins[:, 1] <= dur).all()
    assert (wins[:, 0] <= wins[:, 1]).all()
    assert (np.diff(wins[:, 2]) <= 0).all()      # best first
    assert len(out['pred_saliency_scores']) == clips
  with pytest.raises(ValueError, match='dims'):
    p.predict(np.zeros((5, p.feature_dim + 1)), np.zeros((3, p.config.text_dim)), 5.0)


def test_metrics_writer_drops_rows_a_resumed_run_rewrites(tmp_path):
  from momentdiff_jax.run import metric_writer
  rows = [{'step': 5, 'train/total': 1.0}, {'step': 10, 'train/total': 0.5},
          {'step': 15, 'train/total': 0.4}, {'step': 10, 'final_test/MR-full-mAP': 3.0}]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  w = metric_writer.create(str(tmp_path), resume_step=10, tensorboard=False)
  w.write_scalars(15, {'train/total': 0.41, 'val/MR-short-mAP': None})
  assert _rows(tmp_path) == rows[:2] + [{'step': 15, 'train/total': 0.41}]
