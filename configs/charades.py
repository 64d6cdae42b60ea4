"""Charades-STA with SlowFast + CLIP video features and CLIP text (the paper's main setting).

Release script: momentdiff/scripts/train_charades_sf.sh (lr 2e-4, lr drop 40, clip 1 s,
lw_saliency 4, max_v_l -1 = keep every clip, seed 42). Video features CLIP then SlowFast,
as the script's `--v_feat_dirs`: Dv = 512 + 2304 + 2 TEF = 2818,
Dt = 512; both are read from the built dataset.
"""
from momentdiff_jax.common.config_base import base_config


def get_config():
  c = base_config()
  c.seed = 42
  c.data.name = 'charades'
  # Keep every clip (release: max_v_l -1). Charades-STA videos run up to 194 s at
  # 1 clip/s; 99% of them are under 63 s, so most batches use the small buckets.
  c.data.max_v_l = 200
  # Finer buckets where most videos are (20-40 s): less padding, 8 programs per run.
  c.data.length_buckets = (24, 32, 40, 48, 64, 96, 128, 200)
  c.data.max_q_l = 32
  c.data.max_windows = 5
  c.diffusion.num_spans = 5          # N_r
  c.loss.sim = 4.0                   # lw_saliency
  c.loss.sim_variant = 'charades'
  c.learning_rate = 2e-4
  c.lr_drop_epochs = 40
  c.num_epochs = 100
  c.batch_size = 32
  return c
