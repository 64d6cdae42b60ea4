"""Data parallelism over processes and devices, through `launch/local.sh`.

One tiny synthetic run trained five ways: 1 process x 1 device (plain `python
main.py`), 2 processes x 2 devices, 1 process x 4 devices, and 2x2 killed after a
checkpoint then resumed as 1x4. The global batch, the per-step RNG and the mesh
layout do not depend on the process count, so 2x2 and 1x4 must agree to 1e-5 in
every logged loss and every parameter, and match the single device up to float
reduction order. A persistent compilation cache shared by the runs keeps this
near two minutes on two cores.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch', 'local.sh')
STEPS = 24
FLAGS = [
    '--config=configs/synthetic.py', f'--config.num_train_steps={STEPS}',
    '--config.checkpoint_every_steps=12', '--config.eval_every_steps=1000',
    '--config.log_every_steps=4', '--config.batch_size=8', '--config.eval_batch_size=64',
    '--config.model.hidden_dim=32', '--config.model.ffn_dim=64', '--config.model.num_heads=4',
    # A small step keeps the comparison about the computation: at lr 1e-3, Adam and
    # clipping amplify reduction-order round-off to ~1e-4 within two dozen steps.
    '--config.learning_rate=1e-4', '--config.lr_drop_epochs=0',
    '--config.data.length_buckets=(64,)', '--config.data.prefetch=0',
]
TIMEOUT = 600


def _env(tmp_root):
  env = dict(os.environ)
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  env['JAX_PLATFORMS'] = 'cpu'
  # Compiled programs are reused by the later runs of the same device layout.
  env['JAX_COMPILATION_CACHE_DIR'] = os.path.join(tmp_root, 'jax_cache')
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
  for k in ('MOMENTDIFF_COORDINATOR', 'MOMENTDIFF_NUM_PROCESSES', 'MOMENTDIFF_PROCESS_ID'):
    env.pop(k, None)
  return env


def _cmd(nproc, ndev, workdir):
  main = [sys.executable, 'main.py', f'--workdir={workdir}'] + FLAGS
  if nproc is None:  # plain single-device run, no launcher
    return main
  return [LAUNCH, str(nproc), str(ndev), '--'] + main


def _run(cmd, env):
  res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return res


def _train_rows(workdir):
  """{step: {train/... : value}} from metrics.jsonl."""
  rows = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      train = {k: v for k, v in row.items() if k.startswith('train/')}
      if train:
        rows[row['step']] = train
  return rows


def _params(workdir):
  import jax
  from momentdiff_jax.run import checkpointing
  step, params, _ = checkpointing.restore_params(workdir, 'latest')
  assert step == STEPS
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def _is_key_bias(name):
  """Biases added to every key of a softmax attention: they shift all scores of a
  query equally, so their true gradient is zero and Adam turns the round-off of
  different reduction orders into steps of ~lr. They are compared at 10 x atol."""
  return name.endswith("['bias']") and any(
      k in name for k in ("['k_proj']", "['ca_kcontent_proj']", "['ca_kpos_proj']['layers_2']"))


def _assert_close(a_dir, b_dir, rtol, atol):
  ra, rb = _train_rows(a_dir), _train_rows(b_dir)
  assert sorted(ra) == sorted(rb) and len(ra) == STEPS // 4
  for step in ra:
    assert ra[step].keys() == rb[step].keys()
    for k in ra[step]:
      np.testing.assert_allclose(ra[step][k], rb[step][k], rtol=rtol, atol=atol,
                                 err_msg=f'{k} at step {step}')
  pa, pb = _params(a_dir), _params(b_dir)
  assert pa.keys() == pb.keys()
  for k in pa:
    tol = 10 * atol if _is_key_bias(k) else atol
    np.testing.assert_allclose(pa[k], pb[k], rtol=rtol, atol=tol, err_msg=k)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  # MOMENTDIFF_LAUNCH_TEST_DIR keeps the runs (and reuses finished ones) for debugging.
  root = os.environ.get('MOMENTDIFF_LAUNCH_TEST_DIR') or str(tmp_path_factory.mktemp('launch'))
  env = _env(root)
  dirs = {}
  for name, nproc, ndev in (('2x2', 2, 2), ('1x4', 1, 4), ('1x1', None, 1)):
    dirs[name] = os.path.join(root, name)
    if not os.path.isdir(os.path.join(dirs[name], 'eval')):
      _run(_cmd(nproc, ndev, dirs[name]), env)
  return root, env, dirs


def test_two_hosts_match_one_host(runs):
  _, _, dirs = runs
  _assert_close(dirs['2x2'], dirs['1x4'], rtol=1e-5, atol=1e-5)


def test_multi_device_matches_single_device(runs):
  _, _, dirs = runs
  # Only the order of the float reductions differs (per-device partial sums).
  _assert_close(dirs['2x2'], dirs['1x1'], rtol=2e-3, atol=2e-4)


def test_predictions_gathered_in_order(runs):
  _, _, dirs = runs
  for split in ('val', 'test'):
    rows = []
    for name in ('2x2', '1x4'):
      with open(os.path.join(dirs[name], 'eval', f'{split}_preds.jsonl')) as f:
        rows.append([json.loads(l) for l in f])
    assert [r['qid'] for r in rows[0]] == [r['qid'] for r in rows[1]]
    for a, b in zip(*rows):
      wa, wb = np.asarray(a['pred_relevant_windows']), np.asarray(b['pred_relevant_windows'])
      np.testing.assert_allclose(wa[:, :2], wb[:, :2], atol=1e-2)  # seconds, 4 decimals
      np.testing.assert_allclose(wa[:, 2], wb[:, 2], atol=1e-3)
  # Process 1 wrote nothing of its own: one metrics file, rows once per step.
  steps = [json.loads(l)['step'] for l in open(os.path.join(dirs['2x2'], 'metrics.jsonl'))]
  assert len([s for s in steps if s == 4]) == 1


def test_killed_run_resumes_under_another_process_count(runs):
  root, env, dirs = runs
  workdir = os.path.join(root, 'resumed')
  shutil.rmtree(workdir, ignore_errors=True)
  first = os.path.join(workdir, 'checkpoints', 'latest', '12')
  proc = subprocess.Popen(_cmd(2, 2, workdir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + TIMEOUT
  while not os.path.isdir(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, 'the run ended before its first checkpoint was seen'
  proc.send_signal(signal.SIGTERM)  # local.sh stops both processes
  assert proc.wait(timeout=60) != 0
  from momentdiff_jax.run import checkpointing
  ck = checkpointing.WorkdirCheckpoints(workdir, read_only=True)
  killed_at = ck.latest_step()
  ck.close()
  assert killed_at is not None and killed_at < STEPS, killed_at
  _run(_cmd(1, 4, workdir), env)
  _assert_close(workdir, dirs['1x4'], rtol=1e-5, atol=1e-5)


def test_launcher_fails_when_a_process_fails(tmp_path):
  code = ('import os, sys, time\n'
          'if os.environ["MOMENTDIFF_PROCESS_ID"] == "1": sys.exit(3)\n'
          'time.sleep(60)\n')
  t0 = time.time()
  res = subprocess.run([LAUNCH, '2', '1', '--', sys.executable, '-c', code], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
  assert res.returncode == 3
  assert time.time() - t0 < 30  # the sleeping peer was stopped, not waited for
