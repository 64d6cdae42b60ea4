"""Charades-STA with C3D video features (release dset `charades_c3d`) and GloVe text.

Build the dataset with `--video_features=DIR` holding `<vid>.npz` (key `arr` for C3D
releases) and, for pooled features, `--pool_clips`; dims come from the data.
"""
from momentdiff_jax.common.config_base import base_config


def get_config():
  c = base_config()
  c.seed = 42
  c.data.name = 'charades'
  c.data.max_v_l = 200
  c.data.length_buckets = (32, 64, 96, 128, 200)
  c.diffusion.num_spans = 5
  c.loss.sim = 4.0
  c.learning_rate = 2e-4
  c.lr_drop_epochs = 40
  c.round_seconds = 1.0             # the release's charades_c3d post-processing (inference.py)
  return c
