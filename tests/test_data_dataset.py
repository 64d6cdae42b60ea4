"""The training loop's handle on a dataset: clear errors before any compute."""
import pytest

from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.data import dataset


def test_missing_dataset_dir_is_named(tmp_path):
  c = base_config()
  c.data.dir = str(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match='nope.*build_dataset.py'):
    dataset.open_dataset(c)


def test_empty_dir_for_a_real_dataset():
  c = base_config()
  c.data.name, c.data.dir = 'charades', ''
  with pytest.raises(ValueError, match='data.dir is empty'):
    dataset.open_dataset(c)


def test_synthetic_handle():
  c = base_config()
  c.data.name, c.data.dir = 'synthetic', ''
  c.data.length_buckets, c.data.max_v_l = (32, 64), 64
  ds = dataset.open_dataset(c)
  assert ds.info['video_dim'] == ds.info['video_feature_dim'] + 2
  assert len(ds.rows('test')) == ds.num_examples('test')
  with pytest.raises(ValueError, match="split 'dev'"):
    ds.rows('dev')
