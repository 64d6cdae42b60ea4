"""Built-in synthetic dataset: runs on a fresh machine with no flags.

A small model and a short schedule so that training + evaluation finish in minutes on
2 CPU cores (README: the run's numbers next to the fixed-window baseline). The
architecture, losses and diffusion are the release's; only sizes and the learning
rate differ (the synthetic features are 64-d, not 2818-d).
"""
from momentdiff_jax.common.config_base import base_config


def get_config():
  c = base_config()
  c.data.name = 'synthetic'
  c.data.dir = ''            # empty: generated deterministically into a cache
  c.data.max_v_l = 64
  c.data.length_buckets = (32, 64)
  c.data.max_q_l = 16        # synthetic queries have 5..11 tokens
  c.model.hidden_dim = 64
  c.model.num_heads = 4
  c.model.ffn_dim = 128
  c.model.input_dropout = 0.1
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.num_epochs = 16          # 93 steps per epoch
  c.lr_drop_epochs = 13
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  return c
