"""Decoding and per-clip frame sampling, as the extractors behind the public features.

One decode of a video (PyAV) feeds two samplers:
  * `ClipSampler`: one frame per clip, for the CLIP image tower. The public CLIP
    features (HERO_Video_Feature_Extractor `clip/`, Moment-DETR `run_on_video`) decode
    with ffmpeg's `fps=1/clip_len` filter, so clip k holds the last frame whose
    timestamp rounds (to nearest, halves up) to k clip lengths, i.e. the frame just
    before the middle of the clip, and a video gives `round(t_last / clip_len)` clips.
  * `SlowFastSampler`: 32 frames per clip (the fast pathway of SlowFast 8x8 R50), as
    HERO's `slowfast/extract_feature`: frames resampled to 30 fps by the same `fps`
    filter, padded by repeating the last frame (to whole seconds) and the last second
    (to a whole number of clips), cut into clips of `clip_len * 30` frames, kept
    `ceil(duration / clip_len)` of them, and 32 frames taken in each at
    `linspace(0, 64 * floor(src_fps) / 30 - 1, 32)` (clamped into the clip).
Both resize the shorter side to `size` (bicubic, the ffmpeg CLI's default), the other
side to `int(other * size / shorter)`, and take the centre `size x size` crop.
docs/features.md ("Frame sampling") lists these facts with their sources.
"""
import dataclasses
import fractions
import math
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

# HERO's SlowFast settings (extract_SLOWFAST_8x8_R50.yaml, extract.py).
SLOWFAST_TARGET_FPS = 30
SLOWFAST_NUM_FRAMES = 32
SLOWFAST_SAMPLING_RATE = 2
SLOWFAST_MEAN = (0.45, 0.45, 0.45)
SLOWFAST_STD = (0.225, 0.225, 0.225)


class VideoError(ValueError):
  """A video file that cannot be opened, has no video stream, or yields no clip."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  path: str
  width: int
  height: int
  avg_fps: float           # the stream's average frame rate (ffprobe avg_frame_rate)
  duration: Optional[float]  # the stream's duration in seconds (ffprobe), None if unknown


def as_fraction(seconds) -> fractions.Fraction:
  """A clip length as an exact fraction (1.5 -> 3/2, as HERO's '3/2' strings)."""
  return fractions.Fraction(str(seconds)).limit_denominator(1000)


def round_half_up(x: fractions.Fraction) -> int:
  """ffmpeg's AV_ROUND_NEAR_INF for x >= 0: nearest integer, halves away from zero."""
  return math.floor(x + fractions.Fraction(1, 2))


def output_size(height: int, width: int, size: int) -> Tuple[int, int]:
  """(out_h, out_w): shorter side -> size, longer side truncated (HERO _get_output_dim)."""
  if height >= width:
    return int(height * size / width), size
  return size, int(width * size / height)


def resize_center_crop(frame, size: int) -> np.ndarray:
  """av.VideoFrame -> (size, size, 3) uint8 RGB: bicubic resize, then centre crop."""
  out_h, out_w = output_size(frame.height, frame.width, size)
  rgb = frame.reformat(width=out_w, height=out_h, format='rgb24',
                       interpolation='BICUBIC').to_ndarray()
  y, x = int((out_h - size) / 2.0), int((out_w - size) / 2.0)
  return np.ascontiguousarray(rgb[y:y + size, x:x + size])


def normalize(pixels, mean: Sequence[float], std: Sequence[float], xp=np):
  """uint8 (..., 3) -> float32 (x / 255 - mean) / (std + 1e-8), as both extractors."""
  x = xp.asarray(pixels).astype(xp.float32) / 255.0
  return (x - xp.asarray(mean, xp.float32)) / (xp.asarray(std, xp.float32) + 1e-8)


class FpsResampler:
  """ffmpeg's `fps` filter: a constant-rate sequence of ticks from timestamped frames.

  Tick n (time n / rate from the first frame) holds the last frame whose timestamp,
  rounded to the nearest tick, is <= n. The last frame is never repeated past its
  own rounded timestamp, so a video gives round(t_last * rate) ticks (ffmpeg 3.4's
  filter, and the ffmpeg 4 CLI, whose end-of-stream time is the last frame's pts).
  """

  def __init__(self, rate: fractions.Fraction):
    self.rate = fractions.Fraction(rate)
    self._t0 = None
    self._prev = None
    self.num_ticks = 0

  def push(self, t: fractions.Fraction, item) -> List[Tuple[int, object]]:
    """Adds a frame at time `t` (seconds); returns the (tick, item) pairs now final."""
    if self._t0 is None:
      self._t0 = t
    r = round_half_up((t - self._t0) * self.rate)
    out = []
    if self._prev is not None:
      while self.num_ticks < r:
        out.append((self.num_ticks, self._prev))
        self.num_ticks += 1
    self._prev = item
    return out


class _Converter:
  """Resizes/crops each decoded frame at most once (ticks often repeat a frame)."""

  def __init__(self, size: int):
    self.size = size
    self._last = (None, None)

  def __call__(self, frame) -> np.ndarray:
    if self._last[0] is not frame:
      self._last = (frame, resize_center_crop(frame, self.size))
    return self._last[1]


class ClipSampler:
  """One (size, size, 3) uint8 frame per clip of `clip_len` seconds (CLIP)."""

  def __init__(self, clip_len: float, size: int):
    self._fps = FpsResampler(1 / as_fraction(clip_len))
    self._convert = _Converter(size)

  def push(self, t, frame) -> List[np.ndarray]:
    return [self._convert(f) for _, f in self._fps.push(t, frame)]

  def finish(self) -> List[np.ndarray]:
    return []


def slowfast_offsets(clip_frames: int, src_fps: int,
                     num_frames: int = SLOWFAST_NUM_FRAMES,
                     sampling_rate: int = SLOWFAST_SAMPLING_RATE,
                     target_fps: int = SLOWFAST_TARGET_FPS) -> np.ndarray:
  """(num_frames,) int64 frame offsets inside a clip of `clip_frames` 30-fps frames.

  HERO `get_start_end_idx(clip_frames, num_frames * sampling_rate * src_fps /
  target_fps, 0, 1)` + `temporal_sampling`: a float32 torch.linspace from 0 to
  clip_size - 1, clamped into the clip, truncated to integers. `src_fps` is the
  source's average frame rate floored (HERO's ffprobe info).
  """
  clip_size = num_frames * sampling_rate * src_fps / target_fps
  start = max(clip_frames - clip_size, 0) * 0 / 1   # uniform clip 0 of 1: the start
  end = start + clip_size - 1
  # torch.linspace in float32: the first half counts up from start, the second
  # half down from end (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp).
  start32, end32 = np.float32(start), np.float32(end)
  step = np.float32((end32 - start32) / np.float32(max(num_frames - 1, 1)))
  i = np.arange(num_frames)
  half = num_frames // 2
  vals = np.where(i < half, start32 + step * i.astype(np.float32),
                  end32 - step * (num_frames - 1 - i).astype(np.float32)).astype(np.float32)
  return np.clip(vals, 0, clip_frames - 1).astype(np.int64)


class SlowFastSampler:
  """`num_frames` (size, size, 3) uint8 frames per clip of `clip_len` seconds (SlowFast).

  Streams: a clip is returned as soon as its frames are decoded; `finish()` returns
  the last, padded clips. Only the sampled frames and the current second are kept.
  """

  def __init__(self, clip_len: float, size: int, src_fps: int,
               duration: Optional[float], num_frames: int = SLOWFAST_NUM_FRAMES,
               target_fps: int = SLOWFAST_TARGET_FPS):
    cl = as_fraction(clip_len)
    clip_frames = cl * target_fps
    if clip_frames.denominator != 1:
      raise ValueError(f'clip_len {clip_len} s is not a whole number of frames at '
                       f'{target_fps} fps (SlowFast clips)')
    self.clip_frames = int(clip_frames)
    self.target_fps = target_fps
    self.pad_seconds = cl.numerator  # HERO pads to a multiple of the fraction's numerator
    self.offsets = slowfast_offsets(self.clip_frames, src_fps, num_frames)
    self._wanted = set(int(o) for o in self.offsets)
    self.max_clips = (math.ceil(duration / float(cl)) if duration and duration > 0
                      else None)
    self._fps = FpsResampler(fractions.Fraction(target_fps))
    self._convert = _Converter(size)
    self._kept = {}        # tick -> frame, for ticks at a sampled offset
    self._second = {}      # tick -> frame, for the ticks of the current second
    self.num_emitted = 0

  def _clip(self, frame_of: Callable[[int], np.ndarray], k: int) -> np.ndarray:
    return np.stack([frame_of(k * self.clip_frames + int(o)) for o in self.offsets])

  def push(self, t, frame) -> List[np.ndarray]:
    out = []
    for tick, f in self._fps.push(t, frame):
      arr = self._convert(f)
      if tick % self.target_fps == 0:
        self._second = {}
      self._second[tick] = arr
      if tick % self.clip_frames in self._wanted:
        self._kept[tick] = arr
      if (tick + 1) % self.clip_frames == 0:
        k = tick // self.clip_frames
        if self.max_clips is None or k < self.max_clips:
          out.append(self._clip(self._kept.__getitem__, k))
          self.num_emitted += 1
        base = k * self.clip_frames
        for o in self._wanted:
          self._kept.pop(base + o, None)
    return out

  def finish(self) -> List[np.ndarray]:
    m = self._fps.num_ticks
    if m == 0:
      return []
    fps = self.target_fps
    seconds = -(-m // fps)
    padded_seconds = -(-seconds // self.pad_seconds) * self.pad_seconds
    available = padded_seconds * fps // self.clip_frames
    n = available if self.max_clips is None else min(self.max_clips, available)

    def frame_of(idx):
      if idx >= seconds * fps:              # a tiled copy of the last second
        idx = (seconds - 1) * fps + idx % fps
      if idx >= m:                           # past the last frame: the last frame
        idx = m - 1
      return self._kept[idx] if idx in self._kept else self._second[idx]

    out = [self._clip(frame_of, k) for k in range(self.num_emitted, n)]
    self.num_emitted = max(self.num_emitted, n)
    return out


def probe(path: str) -> VideoInfo:
  """Opens `path` and reads its first video stream's size, frame rate and duration."""
  import av
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError(f'{path}: no video stream')
      s = container.streams.video[0]
      rate = s.average_rate or s.guessed_rate or s.base_rate
      duration = (float(s.duration * s.time_base) if s.duration is not None
                  else None)
      return VideoInfo(path, int(s.codec_context.width), int(s.codec_context.height),
                       float(rate) if rate else 0.0, duration)
  except av.FFmpegError as e:
    raise VideoError(f'{path}: cannot open video ({e})') from None


def decode(path: str) -> Iterator[Tuple[fractions.Fraction, object]]:
  """Yields (time in seconds as a Fraction, av.VideoFrame) in presentation order.

  Frames without a timestamp are skipped (ffmpeg's fps filter drops them too).
  """
  import av
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError(f'{path}: no video stream')
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'
      tb = fractions.Fraction(stream.time_base)
      for frame in container.decode(stream):
        if frame.pts is not None:
          yield frame.pts * tb, frame
  except av.FFmpegError as e:
    raise VideoError(f'{path}: decoding failed ({e})') from None


def sample_clips(path: str, samplers: Sequence, chunk: int = 16
                 ) -> Iterator[Tuple[int, np.ndarray]]:
  """Decodes `path` once into every sampler; yields (sampler index, (n, ...) uint8).

  Chunks hold at most `chunk` consecutive clips of one sampler, in clip order.
  """
  pending = [[] for _ in samplers]

  def drain(i, force):
    while len(pending[i]) >= chunk or (force and pending[i]):
      part, pending[i] = pending[i][:chunk], pending[i][chunk:]
      yield i, np.stack(part)

  for t, frame in decode(path):
    for i, s in enumerate(samplers):
      pending[i].extend(s.push(t, frame))
      yield from drain(i, False)
  for i, s in enumerate(samplers):
    pending[i].extend(s.finish())
    yield from drain(i, True)


def thumbnails(path: str, times: Sequence[float], height: int = 72) -> List[np.ndarray]:
  """(height, w, 3) uint8 frames at `times` (seconds from the first frame), aspect kept:
  for each time the last frame shown at or before it (for timeline figures)."""
  times = sorted(float(t) for t in times)
  out, k, last, t0 = [], 0, None, None
  for t, frame in decode(path):
    t0 = t if t0 is None else t0
    while k < len(times) and float(t - t0) > times[k] and last is not None:
      out.append(last)
      k += 1
    if k == len(times):
      break
    last = frame.reformat(width=max(1, round(frame.width * height / frame.height)),
                          height=height, format='rgb24').to_ndarray()
  while last is not None and len(out) < len(times):
    out.append(last)
  return out
