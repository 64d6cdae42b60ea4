"""benchmarks/speed.py --num_seeds=1,2 runs end to end and writes the replica figures.

Smallest run that exercises the script: train only, one length bucket, one timed step.
No speed is asserted (figures belong to benchmark runs, not tests).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_speed_num_seeds_list_writes_each_k_and_ratios(tmp_path):
  out = tmp_path / 'speed.json'
  env = dict(os.environ, PYTHONPATH=ROOT)
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'speed.py'), '--parts=train',
       '--num_seeds=1,2', '--train_iters=1', '--min_share=0.5', '--train_batch=8',
       f'--output={out}'],
      # Two Charades-shaped train programs compile (K=1, K=2): 468 s for one on a 2-core
      # machine at load average 20 ran past the old 900 s; the limit only stops a hang.
      env=env, capture_output=True, text=True, timeout=2400)
  assert res.returncode == 0, res.stderr[-3000:]
  got = json.loads(out.read_text())
  assert got['num_seeds'] == 2
  assert set(got['by_num_seeds']) == {'1', '2'}
  one, two = got['by_num_seeds']['1'], got['by_num_seeds']['2']
  assert one['num_seeds'] == 1 and two['num_seeds'] == 2
  assert one['step_time_vs_first'] == 1.0 and one['throughput_vs_first'] == 1.0
  # Summed examples/s = K x batch / step time, and the ratios are those of this run.
  assert abs(two['examples_per_s'] - 2 * 8 / two['step_s']) < 1e-6 * two['examples_per_s']
  assert abs(two['step_time_vs_first'] - two['step_s'] / one['step_s']) < 1e-9
  assert abs(two['step_s_per_replica'] - two['step_s'] / 2) < 1e-12
  assert got['train_examples_per_s'] == two['examples_per_s']
  assert 'K=2: step' in res.stdout


def test_speed_rejects_bad_num_seeds(tmp_path):
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'speed.py'), '--num_seeds=0,4'],
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
  assert res.returncode == 2
  assert '--num_seeds=0,4' in res.stderr


def test_speed_refuses_a_min_share_no_bucket_reaches(tmp_path):
  """Named before anything compiles (it was a ZeroDivisionError after the compiles)."""
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'speed.py'), '--parts=infer',
       '--min_share=0.9'],
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
  assert res.returncode == 2
  assert '--min_share=0.9: no infer bucket' in res.stderr
