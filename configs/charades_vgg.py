"""Charades-STA with VGG video features (6 clips/s) and GloVe text (paper Tab. 1, VGG).

Release script: momentdiff/scripts/train_charades_vgg.sh (lr 2e-4, drop 40, clip 1/6 s,
lw_saliency 4, max_v_l -1, seed 42). Dv = 4096 + 2 TEF, Dt = 300 (read from the data).
"""
from momentdiff_jax.common.config_base import base_config


def get_config():
  c = base_config()
  c.seed = 42
  c.data.name = 'charades'
  # Keep every clip: Charades-STA videos run up to ~194 s, i.e. ~1170 clips at 6/s.
  c.data.max_v_l = 1200
  c.data.length_buckets = (128, 192, 256, 384, 512, 768, 1200)
  c.diffusion.num_spans = 5
  c.loss.sim = 4.0
  c.learning_rate = 2e-4
  c.lr_drop_epochs = 40
  return c
