"""The built-in synthetic dataset: cached, deterministic, bucketed, not a location prior."""
import filecmp
import os

import numpy as np
import pytest

from momentdiff_jax.data import pipeline, synthetic
from momentdiff_jax.data import TrainIterator, baselines, load_dataset_info, load_rows
from configs import synthetic as synthetic_config


@pytest.fixture(scope='module')
def builtin(tmp_path_factory):
  """The real built-in dataset, generated into a temp cache like on first use."""
  cache = str(tmp_path_factory.mktemp('cache'))
  old = os.environ.get('MOMENTDIFF_CACHE')
  os.environ['MOMENTDIFF_CACHE'] = cache
  try:
    config = synthetic_config.get_config()
    path = pipeline.resolve_data_dir(config)      # data.dir == '' -> synthetic
    yield config, path
  finally:
    if old is None:
      del os.environ['MOMENTDIFF_CACHE']
    else:
      os.environ['MOMENTDIFF_CACHE'] = old


def test_cached_and_described(builtin):
  config, path = builtin
  assert path == synthetic.cache_dir() and path.endswith(synthetic.CACHE_NAME)
  mtime = os.path.getmtime(os.path.join(path, 'metadata.json'))
  assert synthetic.ensure_synthetic() == path          # second use: no regeneration
  assert os.path.getmtime(os.path.join(path, 'metadata.json')) == mtime
  info = load_dataset_info(path)
  assert info['counts'] == {'train': 3000, 'val': 400, 'test': 500}
  assert info['video_dim'] == 66 and info['text_dim'] == 32 and info['clip_len'] == 1.0
  rows = load_rows(path, 'train')
  n_windows = np.array([len(r['relevant_windows']) for r in rows])
  assert 0.1 < (n_windows == 2).mean() < 0.3 and n_windows.min() == 1
  qids = [r['qid'] for split in ('train', 'val', 'test') for r in load_rows(path, split)]
  assert len(set(qids)) == len(qids)


def test_deterministic(tmp_path):
  a = synthetic.write_synthetic(str(tmp_path / 'a'), num_train=40, num_val=5, num_test=5)
  b = synthetic.write_synthetic(str(tmp_path / 'b'), num_train=40, num_val=5, num_test=5)
  names = sorted(n for n in os.listdir(a) if not n.endswith('.json'))
  assert names and names == sorted(n for n in os.listdir(b) if not n.endswith('.json'))
  _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
  assert not mismatch and not errors


def test_windows_spread_over_location_and_length(builtin):
  _, path = builtin
  rows = load_rows(path, 'train')
  w = np.array([r['relevant_windows'][0] for r in rows]) / np.array(
      [r['duration'] for r in rows])[:, None]
  centers, widths = w.mean(1), w[:, 1] - w[:, 0]
  hist = np.histogram(centers, bins=5, range=(0, 1))[0] / len(centers)
  assert hist.min() > 0.08            # every fifth of the video is used
  assert widths.min() < 0.06 and widths.max() > 0.2


def test_epoch_shapes_from_small_fixed_set(builtin):
  config, path = builtin
  it = TrainIterator(config, path)
  shapes = set()
  for _ in range(it.steps_per_epoch):
    b = next(it)
    shapes.add(tuple((k, v.shape) for k, v in sorted(b.items())))
  lengths = {dict(s)['video_feat'][1] for s in shapes}
  assert lengths == set(config.data.length_buckets) and len(shapes) == 2


def test_not_solvable_by_a_location_prior_but_learnable(builtin):
  _, path = builtin
  fixed = baselines.fixed_window_baseline(path)
  print('fixed-window baseline', fixed)
  assert fixed['test_r1'] < 20
  probe = baselines.linear_probe_baseline(path)
  print('linear probe', probe)
  assert probe['test_r1'] > fixed['test_r1'] + 20
