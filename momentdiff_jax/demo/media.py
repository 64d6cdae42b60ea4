"""Pictures for the demo page: JPEG thumbnails, and a playable video of synthetic clips.

The synthetic data has no pixels; its clips are noisy "concept" vectors. To give the
page a video to play, seek and take thumbnails from, `render_concepts` draws each clip
as one second of a frame in its concept's colour with the concept's name.
"""
import colorsys
import io
from typing import List, Sequence

import numpy as np


def concept_color(k: int) -> tuple:
  """A distinct RGB (0-255) for concept k (golden-ratio hues)."""
  r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.55, 0.85)
  return int(r * 255), int(g * 255), int(b * 255)


def jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
  """(H, W, 3) uint8 -> JPEG bytes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.asarray(pixels, np.uint8)).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def concept_frame(label: int, clip: int, size=(320, 180)) -> np.ndarray:
  """One clip of a synthetic video: its concept's colour and name, and the clip index."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  w, h = size
  img = Image.new('RGB', (w, h), concept_color(int(label)))
  draw = ImageDraw.Draw(img)
  big, small = ImageFont.load_default(size=h // 6), ImageFont.load_default(size=h // 12)
  draw.text((w // 2, h // 2), f'concept{int(label)}', fill=(20, 20, 20), font=big,
            anchor='mm')
  draw.text((w // 2, h - h // 8), f'clip {clip}  ({clip}-{clip + 1} s)', fill=(20, 20, 20),
            font=small, anchor='mm')
  return np.asarray(img)


def render_concepts(path: str, labels: Sequence[int], clip_len: float = 1.0,
                    fps: int = 4, size=(320, 180)) -> List[np.ndarray]:
  """Writes an H.264 MP4 showing clip i's concept for [i, i+1) * clip_len seconds;
  returns the clips' frames (one per clip) for thumbnails."""
  import av  # pylint: disable=g-import-not-at-top
  frames = [concept_frame(k, i, size) for i, k in enumerate(labels)]
  per_clip = max(1, int(round(clip_len * fps)))
  with av.open(path, 'w') as c:
    s = c.add_stream('libx264', rate=fps)
    s.width, s.height, s.pix_fmt = size[0], size[1], 'yuv420p'
    s.options = {'preset': 'ultrafast', 'g': str(fps)}   # a keyframe a second: exact seeks
    for f in frames:
      vf = av.VideoFrame.from_ndarray(f, format='rgb24')
      for _ in range(per_clip):
        for p in s.encode(vf):
          c.mux(p)
    for p in s.encode():
      c.mux(p)
  return frames


def video_thumbnails(path: str, num_clips: int, clip_len: float,
                     height: int = 72) -> List[bytes]:
  """JPEG of each clip's middle frame of a video file (one more decode, small frames)."""
  from momentdiff_jax.features import video  # pylint: disable=g-import-not-at-top
  times = [(i + 0.5) * clip_len for i in range(num_clips)]
  return [jpeg(f) for f in video.thumbnails(path, times, height=height)]
