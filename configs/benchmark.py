"""The accuracy benchmark (benchmarks/accuracy.py; docs/recipe.md).

Data: `momentdiff_jax.data.benchmark_gen` (real Charades-STA / QVHighlights / TACoS
windows and durations, generated SlowFast+CLIP-sized features with a known oracle),
generated on first use into the cache. `data.name='mdbench_v1'`, `'mdbench_v2'` or `'mdbench_v3'`
(the differently made variant). A small model and a fixed budget of 8 epochs so that
3 seeds train in one program in minutes on 2 CPU cores; the architecture, losses and
diffusion are the release's (recipe 'release', the default).
"""
from momentdiff_jax.common.config_base import base_config


def get_config():
  c = base_config()
  c.data.name = 'mdbench_v1'
  c.data.dir = ''            # empty: generated deterministically into a cache
  c.data.max_v_l = 64
  c.data.length_buckets = (32, 64)
  c.data.max_q_l = 16        # generated queries have 6..14 tokens
  c.model.hidden_dim = 64
  c.model.num_heads = 4
  c.model.ffn_dim = 128
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.model.input_dropout = 0.1
  c.num_epochs = 8           # 93 steps per epoch (3,004 train queries)
  c.lr_drop_epochs = 7
  c.log_every_steps = 100
  c.eval_every_steps = 186   # 4 validations (186, 372, 558, 744), best kept on val
  c.checkpoint_every_steps = 744
  return c
