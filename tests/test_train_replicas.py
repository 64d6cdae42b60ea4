"""main.py with --config.num_seeds=3: SIGKILL + resume == uninterrupted, the per-replica
files and JSON, evaluate --replica=k and Predictor's default replica."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.test_train import _assert_same_rows, _cmd, _env, _latest_steps

K = 3
FLAGS = [f'--config.num_seeds={K}', '--config.seed=4',
         '--config.data.length_buckets=(64,)']   # one train-step program to compile


def test_k3_sigkill_resume_equals_uninterrupted(tmp_path):
  env = _env(tmp_path)
  full = tmp_path / 'full'
  subprocess.run(_cmd(full) + FLAGS, env=env, check=True, capture_output=True)

  killed = tmp_path / 'killed'
  proc = subprocess.Popen(_cmd(killed) + FLAGS, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 900   # a loaded machine compiles slowly
  while not _latest_steps(killed) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, 'run finished before it could be killed'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert _latest_steps(killed), 'no checkpoint before the deadline'
  assert _latest_steps(killed)[-1] < 30
  res = subprocess.run(_cmd(killed) + FLAGS, env=env, check=True, capture_output=True,
                       text=True)
  assert '± ' in res.stdout + res.stderr   # the final report: mean ± std

  a = _assert_same_rows(full, killed)

  # Rows: the mean beside every replica's value.
  train_row = next(r for r in a if 'train/total' in r)
  per = [train_row[f'r{i}/train/total'] for i in range(K)]
  assert train_row['train/total'] == pytest.approx(np.mean(per), rel=1e-9)
  assert len(set(per)) == K   # independent replicas
  final = a[-1]
  briefs = []
  with open(full / 'eval' / 'test_metrics.json') as f:
    agg = json.load(f)
  assert [r['seed'] for r in agg['replicas']] == [4, 5, 6]
  for i, rep in enumerate(agg['replicas']):
    with open(full / 'eval' / f'r{i}' / 'test_metrics.json') as f:
      own = json.load(f)
    assert rep['brief'] == own['brief']
    assert (full / 'eval' / f'r{i}' / 'test_preds.jsonl').exists()
    assert (full / 'checkpoints' / f'best_r{i}').is_dir()
    briefs.append(own['brief']['MR-full-mAP'])
    assert final[f'r{i}/final_test/MR-full-mAP'] == pytest.approx(briefs[-1])
  assert agg['brief']['MR-full-mAP'] == pytest.approx(np.mean(briefs))
  assert agg['brief_std']['MR-full-mAP'] == pytest.approx(np.std(briefs, ddof=1))
  assert final['final_test_std/MR-full-mAP'] == pytest.approx(np.std(briefs, ddof=1))
  with open(killed / 'eval' / 'test_metrics.json') as f:
    assert json.load(f)['brief'] == agg['brief']

  # evaluate --replica=1 alone == replica 1 of the one-program evaluation.
  from momentdiff_jax import evaluation
  from momentdiff_jax.inference.predictor import Predictor
  m1 = evaluation.evaluate_workdir(str(full), split='test', replica=1)
  for k, v in agg['replicas'][1]['brief'].items():
    assert m1['brief'][k] == pytest.approx(v, abs=0.5), k   # vmap vs not: float order
  # Predictor's default: the replica with the best validation mAP.
  with open(full / 'eval' / 'val_metrics.json') as f:
    val = [r['brief']['MR-full-mAP'] for r in json.load(f)['replicas']]
  config = Predictor.from_workdir(str(full)).config
  assert config.seed == 4 + int(np.argmax(val))
