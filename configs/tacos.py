"""TACoS with C3D features (`<vid>.npz` key `arr`, average-pooled to 100 clips) and GloVe.

The release ships no TACoS script; values are its argparse defaults (momentdiff/config.py)
except lr 2e-4 and L_sim weight 4, taken from its Charades scripts (train_charades_sf.sh).
Build with `--pool_clips=100`.
"""
from momentdiff_jax.common.config_base import base_config


def get_config():
  c = base_config()
  c.seed = 2018
  c.data.name = 'tacos'
  c.data.max_v_l = 100
  c.data.length_buckets = (100,)
  c.diffusion.num_spans = 5
  c.loss.sim = 4.0
  c.learning_rate = 2e-4
  c.lr_drop_epochs = 40
  c.round_seconds = 2.0             # the release's TACoS post-processing (inference.py)
  return c
