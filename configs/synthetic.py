"""Built-in synthetic dataset: runs on a fresh machine with no flags."""
from momentdiff_jax.config_base import base_config


def get_config():
  c = base_config()
  c.data.name = 'synthetic'
  c.data.dir = ''            # empty: generated deterministically into a cache
  c.data.max_v_l = 64
  c.data.length_buckets = (32, 64)
  c.model.hidden_dim = 128
  c.model.num_heads = 4
  c.model.ffn_dim = 256
  c.batch_size = 32
  c.num_epochs = 30
  c.lr_drop_epochs = 25
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  return c
