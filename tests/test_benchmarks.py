"""benchmarks/speed.py --num_seeds=1,2 runs end to end and writes the replica figures;
release_speed.py runs the authors' code end to end at a tiny size; against_release.py's
medians and ratios.

Smallest run that exercises the script: train only, one length bucket, one timed step.
No speed is asserted (figures belong to benchmark runs, not tests).
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import data_fixtures as fx

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


# ------------------------------------------------------------------ the authors' release
RELEASE_DIR = fx.release_dir()


def test_release_speed_names_a_missing_release_dir(tmp_path):
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'release_speed.py'), '--tiny'],
      env=dict(os.environ, PYTHONPATH=ROOT, MOMENTDIFF_RELEASE_DIR=str(tmp_path / 'nowhere')),
      capture_output=True, text=True, timeout=120)
  assert res.returncode != 0
  assert 'nowhere' in res.stderr and 'MOMENTDIFF_RELEASE_DIR' in res.stderr


@pytest.mark.skipif(RELEASE_DIR is None,
                    reason='no authors\' release: set MOMENTDIFF_RELEASE_DIR to a checkout of '
                    'it (default ../shared/release, absent here)')
def test_release_speed_tiny_runs_their_code_and_writes_speed_keys(tmp_path):
  """Their train_epoch and DDIM inference at batch 4, 2 steps; the JSON's arithmetic."""
  out = tmp_path / 'release.json'
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'release_speed.py'), '--tiny',
       '--threads=1', f'--output={out}'],
      env=dict(os.environ, PYTHONPATH=ROOT, MOMENTDIFF_RELEASE_DIR=RELEASE_DIR),
      capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
  got = json.loads(out.read_text())
  assert got['threads'] == 1 and got['train_batch'] == 4 and got['infer_batch'] == 4
  assert got['torch_version'] and got['device']
  # One timed call each after one warm-up; rates = batch / mean seconds.
  assert len(got['train_step_s_each']) == 1 and set(got['infer_call_s_each']) == {'2'}
  step = float(np.mean(got['train_step_s_each']))
  assert got['train_step_s'] == pytest.approx(step, rel=1e-12)
  assert got['train_examples_per_s'] == pytest.approx(4 / step, rel=1e-12)
  assert set(got['infer_queries_per_s']) == {'2'}
  assert got['infer_queries_per_s']['2'] == pytest.approx(
      4 / float(np.mean(got['infer_call_s_each']['2'])), rel=1e-12)
  # Padded to the longest video of each batch (the release drops the last clip of each).
  assert len(got['train_padded_clips_each']) == 2 and len(got['infer_padded_clips_each']) == 2
  assert got['train_mean_padded_clips'] == float(np.mean(got['train_padded_clips_each'][1:]))
  assert all(1 <= c <= 200 for c in got['train_padded_clips_each'] + got['infer_padded_clips_each'])
  assert len(got['matmul_2048_gflops_torch']) == 2
  assert 'release: train' in res.stdout


def _against_release():
  spec = importlib.util.spec_from_file_location(
      'against_release', os.path.join(ROOT, 'benchmarks', 'against_release.py'))
  mod = importlib.util.module_from_spec(spec)
  with pytest.MonkeyPatch.context() as mp:   # its sibling `report`, as the script sees it
    mp.syspath_prepend(os.path.join(ROOT, 'benchmarks'))
    spec.loader.exec_module(mod)
  return mod


def test_against_release_medians_and_ratios():
  """Medians over rounds and ours / release ratios, against numpy on the same numbers."""
  ar = _against_release()
  ours = [{'train_examples_per_s': t, 'infer_queries_per_s': {'1': a, '10': b, '50': c}}
          for t, a, b, c in ((90., 900., 500., 200.), (60., 700., 550., 150.),
                             (100., 950., 450., 210.))]
  rel = [{'train_examples_per_s': t, 'infer_queries_per_s': {'10': b, '50': c}}
         for t, b, c in ((30., 60., 12.), (20., 70., 10.), (25., 50., 14.))]
  got = ar.combine(ours, {'2': rel})
  med = lambda xs: float(np.median(xs))
  assert got['ours']['train_examples_per_s'] == 90.
  assert got['ours']['infer_queries_per_s'] == {'1': 900., '10': 500., '50': 200.}
  assert got['release']['2'] == {'train_examples_per_s': 25.,
                                 'infer_queries_per_s': {'10': 60., '50': 12.}}
  r = got['ratios']['2']
  assert r['train_examples_per_s'] == pytest.approx(90. / 25.)
  assert set(r['infer_queries_per_s']) == {'10', '50'}   # the steps both measured
  assert r['infer_queries_per_s']['50'] == pytest.approx(200. / 12.)
  per = got['ratios_per_round']['2']
  assert [p['train_examples_per_s'] for p in per] == pytest.approx([3., 3., 4.])
  assert got['ratios_per_round_median']['2']['infer_queries_per_s']['10'] == pytest.approx(
      med([500. / 60., 550. / 70., 450. / 50.]))
  with pytest.raises(ValueError, match='one each per round'):
    ar.combine(ours, {'1': rel[:2]})
