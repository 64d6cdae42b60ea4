"""Global batch identity over process counts, resume, eval coverage, shapes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from momentdiff_jax.data import BATCH_KEYS, TrainIterator, eval_batches
from momentdiff_jax.data import synthetic
from tests import data_fixtures as fx


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  # Smaller than the built-in one (fast); same generator and writer.
  return synthetic.write_synthetic(str(tmp_path_factory.mktemp('syn') / 'ds'),
                                   num_train=300, num_val=37, num_test=50)


def _config(batch_size=8):
  c = fx.data_config(max_v_l=64, buckets=(32, 64), max_q_l=16)
  c.batch_size = batch_size
  c.seed = 5
  return c


def _global(data_dir, process_count, steps, batch_size=8, state=None):
  """Concatenation over simulated processes of their local batches, per step."""
  its = [TrainIterator(_config(batch_size), data_dir, p, process_count, prefetch=0)
         for p in range(process_count)]
  if state is not None:
    for it in its:
      it.set_state(state)
  out = []
  for _ in range(steps):
    parts = [next(it) for it in its]
    out.append({k: np.concatenate([b[k] for b in parts]) for k in parts[0]})
  return out, its


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_keys_and_dtypes(data_dir):
  it = TrainIterator(_config(), data_dir)
  b = next(it)
  assert set(b) == set(BATCH_KEYS)
  assert b['video_feat'].shape[:2] == b['video_mask'].shape == b['saliency_labels'].shape
  assert b['video_feat'].shape[1] in (32, 64) and b['query_feat'].shape[1] == 16
  assert b['saliency_pos_idx'].dtype == np.int32 and b['index'].dtype == np.int32
  np.testing.assert_array_equal(b['num_clips'], b['video_mask'].sum(1))
  assert b['example_mask'].all()


def test_global_batch_identical_over_process_counts(data_dir):
  # 1 process x 4 devices and 2 processes x 2 devices both see the global batch of
  # 8; the pipeline is per process, so only the process split matters.
  steps = 2 * TrainIterator(_config(), data_dir).steps_per_epoch + 3  # 2 epochs+
  one, _ = _global(data_dir, 1, steps)
  two, _ = _global(data_dir, 2, steps)
  four, _ = _global(data_dir, 4, steps)
  _assert_same(one, two)
  _assert_same(one, four)
  # Epochs differ in order, and every eligible example appears once per epoch.
  spe = TrainIterator(_config(), data_dir).steps_per_epoch
  e0 = np.concatenate([b['index'] for b in one[:spe]])
  e1 = np.concatenate([b['index'] for b in one[spe:2 * spe]])
  assert len(set(e0)) == len(e0) == spe * 8 and not np.array_equal(e0, e1)


def test_two_local_processes(data_dir, tmp_path):
  """Two real OS processes, each with its own iterator, rebuild the global batch."""
  code = ('import sys, numpy as np\n'
          'from tests.test_data_pipeline import _config\n'
          'from momentdiff_jax.data import TrainIterator\n'
          'p = int(sys.argv[2])\n'
          'it = TrainIterator(_config(), sys.argv[1], p, 2)\n'
          'bs = [next(it) for _ in range(5)]\n'
          'np.savez(sys.argv[3], **{f"{i}_{k}": v for i, b in enumerate(bs) '
          'for k, v in b.items()})\n')
  procs = [subprocess.Popen([sys.executable, '-c', code, data_dir, str(p),
                             str(tmp_path / f'p{p}.npz')], cwd=fx.REPO)
           for p in range(2)]
  assert all(p.wait(timeout=120) == 0 for p in procs)
  parts = [np.load(tmp_path / f'p{p}.npz') for p in range(2)]
  one, _ = _global(data_dir, 1, 5)
  for i, ref in enumerate(one):
    for k, v in ref.items():
      np.testing.assert_array_equal(
          np.concatenate([parts[0][f'{i}_{k}'], parts[1][f'{i}_{k}']]), v)


@pytest.mark.parametrize('process_count', [1, 2])
def test_resume_from_state(data_dir, process_count):
  spe = TrainIterator(_config(), data_dir).steps_per_epoch
  total, cut = spe + 4, spe - 2           # the resumed run crosses an epoch end
  ref, _ = _global(data_dir, process_count, total)
  _, its = _global(data_dir, process_count, cut)
  state = json.loads(json.dumps(its[0].get_state()))   # goes into a checkpoint
  assert state['epoch'] == 0 and state['step_in_epoch'] == cut
  rest, its = _global(data_dir, process_count, total - cut, state=state)
  _assert_same(ref[cut:], rest)
  assert its[0].step == total
  with pytest.raises(ValueError, match='seed'):
    TrainIterator(_config(), data_dir).set_state(dict(state, seed=99))


def test_prefetch_gives_same_batches(data_dir):
  a = TrainIterator(_config(), data_dir, prefetch=0)
  b = TrainIterator(_config(), data_dir, prefetch=3)
  _assert_same([next(a) for _ in range(6)], [next(b) for _ in range(6)])


@pytest.mark.parametrize('batch_size,process_count', [(8, 1), (8, 2), (16, 4)])
def test_eval_covers_every_example_once(data_dir, batch_size, process_count):
  cfg = _config()
  seen, dummies, n_batches = [], 0, None
  per_proc = []
  for p in range(process_count):
    bs = list(eval_batches(cfg, data_dir, 'val', batch_size, p, process_count))
    per_proc.append(len(bs))
    for b in bs:
      assert len(b['index']) == batch_size // process_count
      real = b['example_mask'] > 0
      seen.extend(b['index'][real].tolist())
      assert np.all(b['index'][~real] == -1)
      dummies += int((~real).sum())
      # Dummies carry a real example's data (no all-masked rows that could NaN).
      assert np.all(b['video_mask'].sum(1) > 0)
  assert len(set(per_proc)) == 1                  # same step count on every host
  assert sorted(seen) == list(range(37))
  assert dummies == per_proc[0] * batch_size - 37


def test_shapes_over_an_epoch_come_from_buckets(data_dir):
  it = TrainIterator(_config(), data_dir)
  shapes = {tuple(v.shape for v in (b['video_feat'], b['query_feat'], b['span_targets']))
            for b in (next(it) for _ in range(it.steps_per_epoch))}
  assert {s[0][1] for s in shapes} == {32, 64}
  assert len(shapes) == 2


def test_bucket_too_small_is_an_error(data_dir):
  cfg = _config()
  cfg.data.length_buckets = (32,)
  with pytest.raises(ValueError, match='largest length bucket is 32'):
    TrainIterator(cfg, data_dir)


def test_saliency_sampling_reproducible_and_valid(data_dir):
  b1 = next(TrainIterator(_config(), data_dir, 0, 1))
  b2 = next(TrainIterator(_config(), data_dir, 1, 2))
  np.testing.assert_array_equal(b1['saliency_pos_idx'][4:], b2['saliency_pos_idx'])
  rows = np.arange(len(b1['index']))[:, None]
  assert np.all(b1['saliency_labels'][rows, b1['saliency_pos_idx']] == 1)
  assert np.all(b1['saliency_labels'][rows, b1['saliency_neg_idx']] == 0)
  assert np.all(b1['saliency_neg_idx'] < b1['num_clips'][:, None])


def test_worker_processes_give_same_batches(data_dir):
  """grain worker processes (data.worker_count) yield the in-process batches, across
  an epoch end, and resume from a state like the in-process iterator."""
  ref = TrainIterator(_config(), data_dir, prefetch=0, worker_count=0)
  spe = ref.steps_per_epoch
  want = [next(ref) for _ in range(spe + 3)]
  it = TrainIterator(_config(), data_dir, prefetch=2, worker_count=2)
  try:
    _assert_same(want[:spe - 2], [next(it) for _ in range(spe - 2)])
    state = it.get_state()
  finally:
    it.close()
  resumed = TrainIterator(_config(), data_dir, prefetch=1, worker_count=1)
  try:
    resumed.set_state(state)
    _assert_same(want[spe - 2:], [next(resumed) for _ in range(5)])
  finally:
    resumed.close()
