"""Decoding and per-clip sampling on videos written here (odd fps, odd durations).

Each frame is three grey bands: its index in base 16 (top, middle) and its second
(bottom), so the frames a sampler returns are identified after lossy coding. Expected frames come from a
direct array re-implementation of the public extractors' steps (ffmpeg fps filter,
HERO's padding / reshape / cut / linspace), not from the streaming code under test.
"""
import fractions
import math

import av
import numpy as np
import pytest

from momentdiff_jax.features import video  # pylint: disable=g-import-not-at-top

W, H = 64, 48


def bands(i, t):
  return (16 * (i % 16), 16 * (i // 16), 30 * (int(math.floor(t)) % 8))


def write_video(path, fps: fractions.Fraction, n_frames: int):
  with av.open(str(path), 'w') as c:
    s = c.add_stream('mpeg4', rate=fps)
    s.width, s.height, s.pix_fmt = W, H, 'yuv420p'
    s.options = {'qscale': '1'}
    for i in range(n_frames):
      img = np.zeros((H, W, 3), np.uint8)
      for b, v in enumerate(bands(i, i / fps)):
        img[b * H // 3:(b + 1) * H // 3] = v
      for p in s.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return str(path)


def band_values(pixels):
  """(..., S, S, 3) uint8 -> (..., 3) the grey level at the centre of each band."""
  s = pixels.shape[-3]
  rows = [s // 6, s // 2, 5 * s // 6]
  return pixels[..., rows, s // 2, :].astype(np.float64).mean(-1)


def frame_ids(pixels):
  v = band_values(pixels)
  return (np.round(v[..., 0] / 16) + 16 * np.round(v[..., 1] / 16)).astype(int)


def fps_filter_ids(times, rate):
  """ffmpeg fps filter by brute force: tick n -> last frame with round(t*rate) <= n."""
  r = np.floor(np.asarray(times) * rate + 0.5).astype(int)
  n_ticks = r[-1]
  return np.asarray([np.nonzero(r <= n)[0].max() for n in range(n_ticks)])


def hero_slowfast_ids(times, duration, clip_len, src_fps):
  """HERO slowfast/extract_feature on frame ids: 30-fps ticks, pad, reshape, cut, sample."""
  import torch
  ticks = fps_filter_ids(times, 30)
  ticks = np.concatenate([ticks, np.repeat(ticks[-1:], (-len(ticks)) % 30)])
  secs = ticks.reshape(-1, 30)
  nom = fractions.Fraction(str(clip_len)).numerator
  secs = np.concatenate([secs, np.repeat(secs[-1:], (-len(secs)) % nom, axis=0)])
  clips = secs.reshape(-1, int(clip_len * 30))[:math.ceil(duration / clip_len)]
  size = 32 * 2 * src_fps / 30
  start = max(clips.shape[1] - size, 0) * 0 / 1
  index = torch.linspace(start, start + size - 1, 32)
  index = torch.clamp(index, 0, clips.shape[1] - 1).long().numpy()
  return clips[:, index]


def decode_all(path, samplers):
  out = [[] for _ in samplers]
  for i, chunk in video.sample_clips(path, samplers, chunk=3):
    out[i].append(chunk)
  return [np.concatenate(o) if o else np.zeros((0,)) for o in out]


@pytest.mark.parametrize('fps,n_frames,clip_len', [
    (fractions.Fraction(30000, 1001), 200, 2),   # 6.67 s: CLIP drops the 0.67 s tail
    (fractions.Fraction(15, 2), 56, 2),          # 7.47 s: CLIP keeps the 1.47 s tail
    (fractions.Fraction(25, 1), 83, 1.5),        # fractional clip length, 3.3 s
])
def test_clips_hold_the_frames_of_the_public_extractors(tmp_path, fps, n_frames, clip_len):
  path = write_video(tmp_path / 'v.mp4', fps, n_frames)
  info = video.probe(path)
  assert info.avg_fps == pytest.approx(float(fps))
  duration = n_frames / fps
  assert info.duration == pytest.approx(float(duration), abs=1e-3)
  times = [i / float(fps) for i in range(n_frames)]
  size = 32
  clip_s = video.ClipSampler(clip_len, size)
  sf_s = video.SlowFastSampler(clip_len, size, math.floor(info.avg_fps), info.duration)
  clip_px, sf_px = decode_all(path, [clip_s, sf_s])
  assert clip_px.shape[1:] == (size, size, 3) and clip_px.dtype == np.uint8
  assert sf_px.shape[1:] == (32, size, size, 3)

  want_clip = fps_filter_ids(times, 1 / clip_len)
  # The public CLIP features have round(t_last / clip_len) clips; the SlowFast ones
  # ceil(duration / clip_len) (the last one padded).
  assert len(want_clip) == math.floor(times[-1] / clip_len + 0.5)
  np.testing.assert_array_equal(frame_ids(clip_px), want_clip)
  want_sf = hero_slowfast_ids(times, float(duration), clip_len, math.floor(float(fps)))
  assert len(want_sf) == math.ceil(float(duration) / clip_len)
  np.testing.assert_array_equal(frame_ids(sf_px), want_sf)
  # The second each frame lies in, from its bottom band: clip k's CLIP frame sits just
  # before the middle of the clip.
  secs = np.round(band_values(clip_px)[:, 2] / 30.0)
  mids = (np.arange(len(clip_px)) + 0.5) * clip_len
  np.testing.assert_array_equal(secs, np.floor(mids - 1e-3))


def test_partial_last_clip_counts():
  """7.47 s at 2 s: CLIP 4 clips (tail >= half a clip), SlowFast ceil = 4; 6.67 s: 3 / 4."""
  for t_last, duration, n_clip, n_sf in [(7.4, 7.47, 4, 4), (6.64, 6.67, 3, 4)]:
    assert video.round_half_up(fractions.Fraction(str(t_last)) / 2) == n_clip
    assert math.ceil(duration / 2) == n_sf


def test_slowfast_offsets_match_torch_linspace():
  import torch
  for clip_frames in (30, 45, 60):
    for src_fps in (7, 15, 23, 24, 25, 29, 30, 50, 59, 60):
      size = 32 * 2 * src_fps / 30
      start = max(clip_frames - size, 0) * 0 / 1
      want = torch.clamp(torch.linspace(start, start + size - 1, 32), 0,
                         clip_frames - 1).long().numpy()
      np.testing.assert_array_equal(video.slowfast_offsets(clip_frames, src_fps), want,
                                    err_msg=f'{clip_frames} {src_fps}')


def test_resize_and_crop_geometry():
  assert video.output_size(720, 1280, 224) == (224, 398)     # landscape
  assert video.output_size(1280, 720, 224) == (398, 224)     # portrait
  assert video.output_size(360, 480, 224) == (224, 298)
  frame = av.VideoFrame.from_ndarray(
      np.tile(np.arange(W, dtype=np.uint8)[None, :, None] * 4, (H, 1, 3)), format='rgb24')
  out = video.resize_center_crop(frame, 32)
  # 48x64 -> 32x42, crop x from int(10 / 2) = 5: the crop's columns are the resized
  # image's columns 5..36, i.e. source columns ~ (5..36 + 0.5) * 64 / 42 - 0.5.
  assert out.shape == (32, 32, 3)
  src_col = (np.arange(5, 37) + 0.5) * W / 42 - 0.5
  np.testing.assert_allclose(out[16, :, 0], src_col * 4, atol=3)


def test_normalize_matches_formula():
  x = np.arange(256, dtype=np.uint8).reshape(-1, 1).repeat(3, 1)
  got = video.normalize(x, video.SLOWFAST_MEAN, video.SLOWFAST_STD)
  np.testing.assert_allclose(got, (x / 255.0 - 0.45) / (0.225 + 1e-8), rtol=1e-6, atol=1e-6)


def test_unreadable_video_raises_video_error(tmp_path):
  bad = tmp_path / 'bad.mp4'
  bad.write_bytes(b'not a video at all' * 10)
  with pytest.raises(video.VideoError, match='bad.mp4'):
    video.probe(str(bad))
  with pytest.raises(video.VideoError, match='bad.mp4'):
    list(video.decode(str(bad)))
