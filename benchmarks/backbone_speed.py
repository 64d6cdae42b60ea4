"""Feature-backbone throughput: CLIP ViT-B/32 and SlowFast R50 8x8, random weights.

  python benchmarks/backbone_speed.py [--output=backbones.json] [--clip_batch=64]
      [--text_batch=64] [--slowfast_batch=4] [--iters=3] [--skip=slowfast]

Measures the networks alone (no decoding), at the published sizes: CLIP images
(N, 224, 224, 3) -> image embeds (one frame per clip, so images/s = clips/s), CLIP
text (B, 77) -> last_hidden_state, SlowFast (N, 32, 224, 224, 3) -> 2304-d clip
features. Per backbone: compile time, items/s over `--iters` timed calls after one
warm-up, and XLA's FLOPs per item; before and after, one 2048^2 matmul's GFLOP/s
tells how much of the machine the run had. Weights are random (throughput does not depend on
them); sizes are those `load_clip` / `load_slowfast` read from the published files
(`clip_model.TowerConfig` below, `slowfast_model.r50_config`). Decoding and resizing
cost is measured by the extraction pipeline, not here.
"""
import json
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import report   # a sibling: this folder is sys.path[0]
from momentdiff_jax.common import app
from momentdiff_jax.features.clip_model import ImageTower, TextTower, TowerConfig
from momentdiff_jax.features.slowfast import slow_indices
from momentdiff_jax.features.slowfast_model import SlowFast, r50_config

# openai/clip-vit-base-patch32 config.json
VIT_B32 = TowerConfig(width=768, layers=12, heads=12, mlp_dim=3072, image_size=224,
                      patch_size=32)
TEXT_B32 = TowerConfig(width=512, layers=12, heads=8, mlp_dim=2048, vocab_size=49408,
                       context_length=77)


def _measure(name, fn, params, args, items, iters):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(params, *args).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', 0.0)) if cost else 0.0
  jax.block_until_ready(compiled(params, *args))  # warm-up
  t0 = time.perf_counter()
  for _ in range(iters):
    out = compiled(params, *args)
  jax.block_until_ready(out)
  dt = (time.perf_counter() - t0) / iters
  row = {'batch': items, 'compile_s': round(compile_s, 1),
         'items_per_s': round(items / dt, 2), 'gflop_per_item': round(flops / items / 1e9, 2)}
  print(f'{name:>16}: {row}', flush=True)
  return row


def _matmul_gflops() -> float:
  """One 2048x2048 fp32 matmul's GFLOP/s: what this machine gives right now (shared
  machines vary; figures are comparable at equal values of this)."""
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  t0 = time.perf_counter()
  for _ in range(5):
    out = f(a)
  jax.block_until_ready(out)
  return round(5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9, 1)


FLAGS = flags.FlagValues()
flags.DEFINE_string('output', '', 'Also write the JSON here.', flag_values=FLAGS)
flags.DEFINE_integer('clip_batch', 64, 'CLIP images per call.', flag_values=FLAGS)
flags.DEFINE_integer('text_batch', 64, 'CLIP queries per call.', flag_values=FLAGS)
flags.DEFINE_integer('slowfast_batch', 4, 'SlowFast clips per call.', flag_values=FLAGS)
flags.DEFINE_integer('iters', 3, 'Timed calls after one warm-up.', flag_values=FLAGS)
flags.DEFINE_string('skip', '', 'comma list of clip_image,clip_text,slowfast',
                    flag_values=FLAGS)


def _main():
  args = app.namespace(FLAGS)
  skip = set(filter(None, args.skip.split(',')))
  key = jax.random.key(0)
  result = {'device': str(jax.devices()[0].device_kind), 'num_devices': jax.device_count(),
            'jax': jax.__version__, 'dtype': 'float32',
            'matmul_2048_gflops_before': _matmul_gflops()}

  if 'clip_image' not in skip:
    tower = ImageTower(VIT_B32, 512)
    x = jnp.zeros((args.clip_batch, 224, 224, 3), jnp.float32)
    params = tower.init(key, x[:1])
    result['clip_image'] = _measure('CLIP image', tower.apply, params, (x,),
                                    args.clip_batch, args.iters)
  if 'clip_text' not in skip:
    tower = TextTower(TEXT_B32)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 49408, (args.text_batch, 77)),
                      jnp.int32)
    mask = jnp.ones_like(ids)
    params = tower.init(key, ids[:1], mask[:1])
    result['clip_text'] = _measure('CLIP text', tower.apply, params, (ids, mask),
                                   args.text_batch, args.iters)
  if 'slowfast' not in skip:
    model = SlowFast(r50_config())
    fast = jnp.zeros((args.slowfast_batch, 32, 224, 224, 3), jnp.float32)
    slow = fast[:, slow_indices(32, 4)]
    variables = model.init(key, slow[:1], fast[:1])
    result['slowfast'] = _measure('SlowFast R50', model.apply, variables, (slow, fast),
                                  args.slowfast_batch, args.iters)
  finish(result, args.output)


def finish(result: dict, output: str) -> None:
  """The closing matmul figure (how much of the machine the run had at its end), then
  `result` to `output` (if any) and to stdout as one JSON line."""
  result['matmul_2048_gflops_after'] = _matmul_gflops()
  report.write_result(output, result, log=None)
  print(json.dumps(result))


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
