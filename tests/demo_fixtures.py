"""A tiny workdir that reads video files (a random tiny CLIP, random model params), and
small H.264 videos a browser can play, for the Predictor and demo tests (no training).

`clip_workdir(root)` writes `root/clip` (a transformers CLIPModel from a tiny config,
`save_pretrained`), `root/wd` (config.json + random params as the best checkpoint,
recording the CLIP backbone as a dataset built by extract_features.py would) and
returns {'workdir', 'clip', 'clip_len'}. Needs torch and transformers (callers skip).
"""
import os

import numpy as np

CLIP_LEN = 2.0
QUERIES = ['a red door opens', 'the green light', 'someone walks to the blue window',
           'a person sits down']
# Coloured segments (seconds): the test video's content.
SEGMENTS = [((200, 40, 40), 4.0), ((40, 200, 40), 4.0), ((40, 40, 200), 4.0)]


def write_h264(path, segments=SEGMENTS, fps: int = 10, size=(64, 48)) -> str:
  """An H.264 MP4 (yuv420p, seekable in browsers) of solid-colour segments with a
  moving bar, `segments` [(rgb, seconds), ...]."""
  import av  # pylint: disable=g-import-not-at-top
  w, h = size
  with av.open(str(path), 'w') as c:
    s = c.add_stream('libx264', rate=fps)
    s.width, s.height, s.pix_fmt = w, h, 'yuv420p'
    s.options = {'preset': 'ultrafast', 'g': str(fps)}   # a keyframe every second
    i = 0
    for rgb, seconds in segments:
      for _ in range(int(round(seconds * fps))):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rgb
        x = (3 * i) % w
        img[h // 2 - 3:h // 2 + 3, x:x + 4] = 255
        for p in s.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
          c.mux(p)
        i += 1
    for p in s.encode():
      c.mux(p)
  return str(path)


def tiny_config(video_dim: int, text_dim: int, clip_len: float):
  """configs/synthetic.py shrunk: one layer per stack, 3 spans, 2 DDIM steps."""
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  c = synthetic.get_config()
  c.data.name = 'tiny'         # not the synthetic data: features from real backbones
  c.model.hidden_dim, c.model.num_heads, c.model.ffn_dim = 32, 4, 64
  c.model.t2v_layers = c.model.enc_layers = c.model.dec_layers = c.model.n_input_proj = 1
  c.diffusion.num_spans = c.data.max_windows = 3
  c.diffusion.sampling_steps = 2
  c.data.max_v_l, c.data.length_buckets = 16, (8, 16)
  c.video_dim, c.text_dim = int(video_dim), int(text_dim)
  c.data.clip_len = float(clip_len)
  return c


def write_workdir(workdir: str, config, seed: int = 0) -> str:
  """config.json + freshly initialized params as the best checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.run import checkpointing, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  model = workdir_lib.create_model(config, config.video_dim, config.text_dim)
  params = workdir_lib.init_params(model, config, jax.random.PRNGKey(seed),
                                   config.video_dim, config.text_dim)
  checkpointing.save_converted(workdir, config, params)
  return workdir


def clip_workdir(root) -> dict:
  """A tiny CLIP directory and a workdir trained (nominally) on its features."""
  from momentdiff_jax.common import records  # pylint: disable=g-import-not-at-top
  from tests import backbone_fixtures  # pylint: disable=g-import-not-at-top
  clip_dir = backbone_fixtures.write_small_clip(os.path.join(str(root), 'clip'), QUERIES)
  image = records.record('clip', clip_dir, 12, frames_per_clip=1, crop=32)
  config = tiny_config(12 + 2, 16, CLIP_LEN)
  config.video_sources = ['clip_features']
  config.data.backbones = {
      'video': [dict(image, clip_len=CLIP_LEN)],
      'text': dict(image, feature_dim=16, output='last_hidden_state')}
  wd = write_workdir(os.path.join(str(root), 'wd'), config)
  return {'workdir': wd, 'clip': clip_dir, 'clip_len': CLIP_LEN}


def first_of_each(windows):
  """Windows equal to a better one dropped (the page shows each window once)."""
  seen, out = set(), []
  for s, t, score in windows:
    if (s, t) not in seen:
      seen.add((s, t))
      out.append([s, t, score])
  return out
