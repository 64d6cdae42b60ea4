"""Feature extraction speed, end to end: decode + sample + resize + encode, clips/s.

  python benchmarks/extract_speed.py [--batches=1] [--clip_len=2] [--width=640 --height=360]
      [--fps=30] [--backbones=clip,slowfast] [--batch_size=64] [--num_workers=2]
      [--output=F.json]

Writes synthetic videos (h264, moving content) of `--batches` full batches of clips per
backbone (CLIP: batch_size clips, SlowFast: batch_size / 8) and runs the pipeline of
`data_prep/extract_features.py` on it (`extract.extract_videos`) with CLIP ViT-B/32 and
SlowFast R50 8x8 at their published sizes and random weights (speed does not depend on
the weights), per backbone alone: after a warm-up run on a short video (compiles, timed
as `compile_s`), clips/s over the whole video (`extract_clips_per_s`), and clips/s of
decoding + sampling alone, without the network (`decode_clips_per_s`). The network
alone is `benchmarks/backbone_speed.py`. One 2048^2 matmul's GFLOP/s before and after
tells how much of a shared machine the run had.
"""
import fractions
import os
import sys
import tempfile
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from backbone_speed import VIT_B32, _matmul_gflops, finish   # a sibling: this folder is sys.path[0]
from momentdiff_jax.common import app
from momentdiff_jax.features import backbones as bb
from momentdiff_jax.features import extract
from momentdiff_jax.features import video
from momentdiff_jax.features.clip import CLIP_MEAN, CLIP_STD
from momentdiff_jax.features.clip_model import ImageTower
from momentdiff_jax.features.slowfast import SlowFastBackbone, slow_indices
from momentdiff_jax.features.slowfast_model import SlowFast, r50_config  # pylint: disable=g-import-not-at-top


def write_video(path, seconds, width, height, fps):
  """h264 (mpeg4 if libx264 is missing): a gradient with a moving square and noise."""
  import av  # pylint: disable=g-import-not-at-top
  codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:height, 0:width]
  base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)],
                  -1).astype(np.uint8)
  with av.open(path, 'w') as c:
    s = c.add_stream(codec, rate=fractions.Fraction(fps))
    s.width, s.height, s.pix_fmt = width, height, 'yuv420p'
    for i in range(int(seconds * fps)):
      img = base.copy()
      x = (i * 7) % (width - 64)
      img[height // 3:height // 3 + 64, x:x + 64] = (255 - 3 * (i % 80), 40, 200)
      img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
      for p in s.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return codec


def published_models(names):
  """ViT-B/32 image tower and SlowFast R50 8x8 with random weights, as Encoders takes."""
  key = jax.random.key(0)
  models = {}
  if 'clip' in names:
    tower = ImageTower(VIT_B32, 512)
    params = tower.init(key, jnp.zeros((1, 224, 224, 3)))['params']
    apply_images = lambda p, x: tower.apply({'params': p}, x)
    models['clip'] = types.SimpleNamespace(
        image_size=224, image_mean=CLIP_MEAN, image_std=CLIP_STD, embed_dim=512,
        params=params, apply_images=apply_images,
        encode_images=lambda x: apply_images(params, x))
  if 'slowfast' in names:
    model = SlowFast(r50_config())
    fast = jnp.zeros((1, 32, 224, 224, 3))
    variables = model.init(key, fast[:, slow_indices(32, 4)], fast)
    models['slowfast'] = SlowFastBackbone(model, variables)
  return models


FLAGS = flags.FlagValues()
flags.DEFINE_integer('batches', 1, 'video length in full batches of clips of each backbone',
                     flag_values=FLAGS)
flags.DEFINE_float('clip_len', 2, 'seconds per clip', flag_values=FLAGS)
flags.DEFINE_integer('width', 640, 'video width', flag_values=FLAGS)
flags.DEFINE_integer('height', 360, 'video height', flag_values=FLAGS)
flags.DEFINE_integer('fps', 30, 'video frame rate', flag_values=FLAGS)
flags.DEFINE_string('backbones', 'clip,slowfast', 'comma-separated: clip, slowfast',
                    flag_values=FLAGS)
flags.DEFINE_integer('batch_size', 64, 'CLIP frames per batch (SlowFast: / 8)',
                     flag_values=FLAGS)
flags.DEFINE_integer('num_workers', 2, 'video decoding threads', flag_values=FLAGS)
flags.DEFINE_string('output', '', 'Also write the JSON here.', flag_values=FLAGS)


def _main():
  args = app.namespace(FLAGS)
  names = bb.parse_names(args.backbones)
  tmp = tempfile.mkdtemp(prefix='extract_speed-')
  warm_video = os.path.join(tmp, 'warm.mp4')
  codec = write_video(warm_video, 2 * args.clip_len, args.width, args.height, args.fps)
  result = {'device': str(jax.devices()[0].device_kind), 'num_devices': jax.device_count(),
            'jax': jax.__version__, 'dtype': 'float32',
            'video': {'width': args.width, 'height': args.height, 'fps': args.fps,
                      'codec': codec, 'seconds': {}},
            'clip_len': args.clip_len, 'batch_size': args.batch_size,
            'num_workers': args.num_workers,
            'matmul_2048_gflops_before': _matmul_gflops(),
            'decode_clips_per_s': {}, 'extract_clips_per_s': {}, 'compile_s': {},
            'clips': {}}
  models = published_models(names)
  for n in names:
    enc = bb.Encoders([n], batch_size=args.batch_size, models={n: models[n]})
    # Full batches: a video of exactly batches x batch clips for either sampler.
    seconds = args.batches * enc.batch(n) * args.clip_len
    main_video = os.path.join(tmp, f'main-{n}.mp4')
    write_video(main_video, seconds, args.width, args.height, args.fps)
    result['video']['seconds'][n] = seconds
    info = video.probe(main_video)
    # Decoding + sampling + resizing alone.
    t0 = time.perf_counter()
    count = sum(len(a) for _, a in video.sample_clips(main_video, enc.samplers(main_video,
                                                                              args.clip_len)))
    result['decode_clips_per_s'][n] = round(count / (time.perf_counter() - t0), 2)
    out = os.path.join(tmp, f'feats-{n}')
    quiet = lambda _: None
    t0 = time.perf_counter()
    extract.extract_videos([('warm', warm_video)], out, enc, args.clip_len,
                           num_workers=args.num_workers, progress=False, log=quiet)
    result['compile_s'][n] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    s = extract.extract_videos([('main', main_video)], out, enc, args.clip_len,
                               num_workers=args.num_workers, progress=False, log=quiet)
    dt = time.perf_counter() - t0
    result['clips'][n] = s['clips'][n]
    result['extract_clips_per_s'][n] = round(s['clips'][n] / dt, 3)
    print(f'{n:>9}: {s["clips"][n]} clips of {info.duration:.1f} s video, decode+sample '
          f'{result["decode_clips_per_s"][n]} clips/s, extraction '
          f'{result["extract_clips_per_s"][n]} clips/s (warm-up incl. compile '
          f'{result["compile_s"][n]} s)', flush=True)
  finish(result, args.output)


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
