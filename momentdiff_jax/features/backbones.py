"""Loaded backbones as data-parallel encoders, and the record of what produced features.

`Encoders(names, clip_weights, slowfast_weights)` loads CLIP and/or SlowFast from local
files and exposes per backbone a `(N, ...) uint8 -> (N, D) float32` function that
normalizes on device and runs batches split over every local device (`data` mesh axis,
parameters replicated), padded to one fixed batch so each backbone compiles once.

`records` holds the identity of each loaded backbone (see common/records.py).
"""
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from momentdiff_jax.common import records
from momentdiff_jax.features import video

NAMES = records.NAMES
FEATURE_DIRS = records.FEATURE_DIRS
TEXT_DIR = records.TEXT_DIR
MANIFEST = records.MANIFEST
record = records.record


def parse_names(spec) -> list:
  names = [n.strip() for n in (spec.split(',') if isinstance(spec, str) else spec)
           if n.strip()]
  bad = [n for n in names if n not in NAMES]
  if bad or not names or len(set(names)) != len(names):
    raise ValueError(f'backbones must be a comma-separated subset of {",".join(NAMES)} '
                     f'without repeats, got {spec!r}')
  return names


class _Parallel:
  """jit(normalize -> apply) with the batch split over every local device.

  A backbone without a pure `apply_*(params, x)` function is called through its
  `encode_*(x)` method instead (`encode_fn`), on one device.
  """

  def __init__(self, apply_fn, params, mean, std, batch_size: int, encode_fn=None):
    devices = jax.local_devices() if apply_fn is not None else jax.local_devices()[:1]
    self.mesh = Mesh(np.asarray(devices), ('data',))
    self.batch = -(-max(batch_size, 1) // len(devices)) * len(devices)
    self.data = NamedSharding(self.mesh, P('data'))

    if apply_fn is None:
      self.params = None
      self._fn = lambda _, pixels: encode_fn(video.normalize(pixels, mean, std))
      return
    self.params = jax.device_put(params, NamedSharding(self.mesh, P()))

    def fn(params, pixels):
      x = video.normalize(pixels, mean, std, xp=jnp)
      return apply_fn(params, x).astype(jnp.float32)

    self._fn = jax.jit(fn, out_shardings=self.data)

  def __call__(self, pixels: np.ndarray) -> np.ndarray:
    n = len(pixels)
    out = []
    for s in range(0, n, self.batch):
      part = pixels[s:s + self.batch]
      m = len(part)
      if m < self.batch:  # one program per backbone: pad the last batch
        part = np.concatenate([part, np.zeros((self.batch - m,) + part.shape[1:],
                                              part.dtype)])
      y = self._fn(self.params, jax.device_put(part, self.data))
      out.append(np.asarray(jax.device_get(y))[:m])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class Encoders:
  """Backbones by name, each as a data-parallel `uint8 clips -> features` function.

  Attributes: `names` (in the order given), `models` (name -> loaded backbone),
  `records` (name -> `record(...)` without clip_len), `sizes` (name -> crop size).
  """

  def __init__(self, names: Sequence[str], clip_weights: Optional[str] = None,
               slowfast_weights: Optional[str] = None, batch_size: int = 64,
               models: Optional[Dict[str, object]] = None,
               slowfast_frames: int = 32, slowfast_crop: int = 224, text: bool = True):
    """`text=False`: video features only, CLIP's tokenizer files are not needed."""
    self.names = parse_names(names)
    paths = {'clip': clip_weights, 'slowfast': slowfast_weights}
    models = dict(models or {})
    for n in self.names:
      if n in models:
        continue
      if not paths[n]:
        raise ValueError(f'backbone {n!r} needs --{n}_weights=PATH (a local file; '
                         'nothing is downloaded)')
      if n == 'clip':
        from momentdiff_jax.features.clip import load_clip
        models[n] = load_clip(paths[n], with_tokenizer=text)
      else:
        from momentdiff_jax.features.slowfast import load_slowfast
        models[n] = load_slowfast(paths[n], num_frames=slowfast_frames,
                                  crop_size=slowfast_crop)
    self.models = models
    self.batch_size = batch_size
    self.records, self.sizes, self._fns = {}, {}, {}
    for n in self.names:
      m = models[n]
      if n == 'clip':
        self.sizes[n] = int(m.image_size)
        self.records[n] = record(n, paths[n], m.embed_dim, frames_per_clip=1,
                                 crop=self.sizes[n])
        self._fns[n] = _Parallel(getattr(m, 'apply_images', None), getattr(m, 'params', None),
                                 m.image_mean, m.image_std, batch_size, m.encode_images)
      else:
        self.sizes[n] = int(m.crop_size)
        dim = int(getattr(m, 'feature_dim', 2304))
        self.records[n] = record(n, paths[n], dim, frames_per_clip=int(m.num_frames),
                                 crop=self.sizes[n])
        # SlowFast clips are 32 frames each: a smaller batch of clips.
        self._fns[n] = _Parallel(getattr(m, 'apply_clips', None), getattr(m, 'params', None),
                                 m.mean, m.std, max(1, batch_size // 8), m.encode_clips)
    self._text = None

  def describe(self) -> str:
    """e.g. 'clip (batch 64), slowfast (batch 8) on 2 local devices'."""
    n = len(jax.local_devices()) if any(f.params is not None for f in self._fns.values()) else 1
    return (', '.join(f'{k} (batch {self._fns[k].batch})' for k in self.names)
            + f' on {n} local device{"s" if n > 1 else ""}')

  def batch(self, name: str) -> int:
    return self._fns[name].batch

  def encode(self, name: str, pixels: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) or (N, T, S, S, 3) uint8 -> (N, D) float32."""
    return self._fns[name](pixels)

  def samplers(self, path: str, clip_len: float):
    """One sampler per backbone, in `names` order, for the video at `path`."""
    info = video.probe(path)
    out = []
    for n in self.names:
      if n == 'clip':
        out.append(video.ClipSampler(clip_len, self.sizes[n]))
      else:
        out.append(video.SlowFastSampler(clip_len, self.sizes[n], int(np.floor(info.avg_fps)),
                                         info.duration,
                                         num_frames=int(self.models[n].num_frames)))
    return out

  def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> list:
    """Query texts -> per query the CLIP text tower's last_hidden_state rows up to and
    including the end token, (L_i, text_width) float32 (Moment-DETR's query features)."""
    if 'clip' not in self.models:
      raise ValueError('query features need the clip backbone (--clip_weights)')
    m = self.models['clip']
    if self._text is None:
      self._text = jax.jit(m.apply_text)
    out = []
    for s in range(0, len(texts), batch_size):
      part = list(texts[s:s + batch_size])
      n = len(part)
      part += [''] * (batch_size - n)       # one program: pad the last batch
      ids, mask = m.tokenize(part)
      h = np.asarray(jax.device_get(self._text(m.params, jnp.asarray(ids, jnp.int32),
                                               jnp.asarray(mask, jnp.int32))))
      lengths = np.asarray(mask).sum(1)
      out.extend(h[i, :int(lengths[i])].astype(np.float32) for i in range(n))
    return out
