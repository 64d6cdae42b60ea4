"""What the demo page asks for, without HTTP: videos in, moments out.

A video (an uploaded file, one of `--videos`, a synthetic test video, or uploaded
feature files) becomes an `Entry` keyed by the SHA-256 of its bytes (synthetic: its
id). Its features are computed once, in a background thread that reports progress,
and every later query on it (and a re-upload of the same file) reuses them. One lock
serializes the Predictor: its compiled programs and key counter are shared.
"""
import concurrent.futures
import dataclasses
import hashlib
import io
import os
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from momentdiff_jax.demo import media

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.mov', '.avi', '.m4v', '.mpg', '.mpeg', '.ogv')
FEATURE_EXTENSIONS = ('.npz', '.npy')


class InputError(ValueError):
  """Bad input from the page: shown there as it is."""


@dataclasses.dataclass
class Entry:
  id: str
  name: str
  kind: str                            # 'video' | 'features' | 'synthetic'
  state: str = 'queued'                # queued | extracting | ready | error
  progress: float = 0.0
  message: str = ''
  path: Optional[str] = None           # the file the features come from
  media: Optional[str] = None          # a file the browser can play
  features: Optional[list] = None      # per source (L_i, D_i)
  duration: float = 0.0
  clip_len: float = 1.0
  thumbs: List[bytes] = dataclasses.field(default_factory=list)
  labels: Optional[list] = None        # synthetic: the concept of each clip
  row: Optional[dict] = None           # synthetic: the annotation
  stored_query: Optional[np.ndarray] = None
  extract_s: Optional[float] = None
  answers: Dict[str, dict] = dataclasses.field(default_factory=dict)

  @property
  def num_clips(self) -> int:
    return min(len(f) for f in self.features) if self.features else 0

  def status(self) -> dict:
    out = {k: getattr(self, k) for k in ('id', 'name', 'kind', 'state', 'message',
                                          'duration', 'clip_len', 'labels', 'extract_s')}
    out.update(progress=round(self.progress, 3), num_clips=self.num_clips,
               has_media=self.media is not None, queries=list(self.answers))
    if self.labels:
      out['label_colors'] = {str(k): '#%02x%02x%02x' % media.concept_color(k)
                             for k in set(self.labels)}
    if self.row:
      out['annotation'] = {'query': self.row['query'], 'windows': self.row['relevant_windows']}
    return out


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()[:20]


def load_array(name: str, data: bytes, keys=('features', 'arr')) -> np.ndarray:
  """A 2-D float array from `.npy` or `.npz` bytes (the first of `keys`, else the only
  array); InputError naming the file otherwise."""
  try:
    obj = np.load(io.BytesIO(data), allow_pickle=False)
    if isinstance(obj, np.lib.npyio.NpzFile):
      with obj:
        key = next((k for k in keys if k in obj.files), None)
        if key is None and len(obj.files) == 1:
          key = obj.files[0]
        if key is None:
          raise InputError(f'{name}: no array named {" or ".join(keys)} (has {obj.files})')
        obj = obj[key]
  except InputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f'{name}: not a readable .npy/.npz file ({type(e).__name__}: {e})'
                     ) from None
  arr = np.asarray(obj)
  if arr.ndim != 2 or 0 in arr.shape or not np.issubdtype(arr.dtype, np.number):
    raise InputError(f'{name}: need a 2-D numeric (rows, dim) array, got {arr.dtype} '
                     f'{arr.shape}')
  return arr.astype(np.float32)


class DemoService:
  """Videos and queries for one Predictor (see the module docstring)."""

  def __init__(self, predictor, cache_dir: str, videos_dir: Optional[str] = None,
               synthetic=None):
    self.p = predictor
    self.cache_dir = cache_dir
    os.makedirs(os.path.join(cache_dir, 'media'), exist_ok=True)
    self.videos_dir = videos_dir
    self.synthetic = synthetic
    self.entries: Dict[str, Entry] = {}
    self.lock = threading.Lock()
    self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='extract')
    self.video_reason = None
    try:
      predictor.encoders()                  # loads the backbones once, or says why not
    except ValueError as e:
      self.video_reason = str(e)
    self.text_reason = None
    if synthetic is None and self.video_reason is not None:
      self.text_reason = ('this workdir has no text encoder here (' + self.video_reason
                          + '): upload a query feature file')
    # Compile while the person picks a video (the first query would wait otherwise).
    self.pool.submit(self._warm_up)

  def _warm_up(self) -> None:
    with self.lock:
      try:
        self.p.warm_up(backbones=self.video_reason is None)
        for b in sorted(self.p.config.data.length_buckets)[1:]:
          self.p.warm_up(int(b))
      except Exception:  # pylint: disable=broad-except
        pass       # a real failure shows again, with its message, on the first request

  # ---- what the page shows first ----
  def info(self) -> dict:
    c = self.p.config
    library = []
    if self.videos_dir:
      library = sorted(f for f in os.listdir(self.videos_dir)
                       if f.lower().endswith(VIDEO_EXTENSIONS))
    return {
        'video_files': self.video_reason is None, 'video_reason': self.video_reason,
        'text_typed': self.text_reason is None, 'text_reason': self.text_reason,
        'synthetic': self.synthetic is not None,
        'vocabulary': self.synthetic.vocabulary if self.synthetic else None,
        'examples': self.synthetic.examples() if self.synthetic else [],
        'library': library, 'video_sources': self.p.video_sources or ['features'],
        'clip_len': c.data.get('clip_len'), 'feature_dim': self.p.feature_dim,
        'text_dim': c.text_dim, 'max_v_l': c.data.max_v_l,
        'sampling_steps': self.p.sampling_steps}

  def entry(self, vid: str) -> Entry:
    if vid not in self.entries:
      raise KeyError(vid)
    return self.entries[vid]

  # ---- videos in ----
  def add_video_file(self, name: str, data: bytes) -> Entry:
    """An uploaded file: a video (features extracted in the background)."""
    if not data:
      raise InputError(f'{name}: the file is empty')
    if self.video_reason is not None:
      raise InputError(f'{name}: this workdir cannot read video files ({self.video_reason}). '
                       'Upload feature files (.npz/.npy) instead'
                       + (' or pick a synthetic test video' if self.synthetic else ''))
    key = sha256(data)
    old = self.entries.get(key)
    if old is not None and old.state != 'error':
      return old                           # the same bytes: features reused
    ext = os.path.splitext(name)[1].lower() or '.bin'
    path = os.path.join(self.cache_dir, f'{key}{ext}')
    with open(path, 'wb') as f:
      f.write(data)
    return self._submit_video(Entry(key, name, 'video', path=path, media=path))

  def add_library_video(self, name: str) -> Entry:
    if not self.videos_dir or name not in self.info()['library']:
      raise InputError(f'no video {name!r} in the --videos folder')
    with open(os.path.join(self.videos_dir, name), 'rb') as f:
      return self.add_video_file(name, f.read())

  def _submit_video(self, e: Entry) -> Entry:
    self.entries[e.id] = e
    self.pool.submit(self._extract, e)
    return e

  def _extract(self, e: Entry) -> None:
    t0 = time.time()
    try:
      e.state, e.message = 'extracting', 'decoding and encoding clips'
      with self.lock:
        feats = self.p.encode_video(e.path, progress=lambda f: setattr(e, 'progress', 0.9 * f))
      e.features, e.duration, e.clip_len = feats.features, feats.duration, feats.clip_len
      e.message = 'thumbnails'
      e.thumbs = media.video_thumbnails(e.path, e.num_clips, e.clip_len)
      e.extract_s = round(time.time() - t0, 2)
      e.progress, e.state, e.message = 1.0, 'ready', ''
    except Exception as ex:  # pylint: disable=broad-except
      # Named as the person knows the file, not by its copy in the cache.
      e.state, e.message = 'error', _message(ex).replace(e.path, e.name)

  def add_feature_files(self, files: List[tuple], duration: Optional[float]) -> Entry:
    """Uploaded feature files, one per video source [(name, bytes)], + a duration."""
    sources = self.p.video_sources or ['features']
    if len(files) != len(sources):
      raise InputError(f'give one feature file per video source ({", ".join(sources)}), '
                       f'got {len(files)}')
    arrays = [load_array(n, d) for n, d in files]
    clip_len = self.p.config.data.get('clip_len')
    n = min(len(a) for a in arrays)
    if duration is not None and duration <= 0:
      raise InputError(f'duration must be > 0 seconds, got {duration}')
    if duration is None:
      if not clip_len:
        raise InputError('give the video\'s duration (this dataset has no fixed clip length)')
      duration = n * clip_len
    try:
      self.p._video(arrays)     # pylint: disable=protected-access  # dims, NaN: now
    except ValueError as ex:
      raise InputError(f'{", ".join(n for n, _ in files)}: {ex}') from None
    key = sha256(b''.join(d for _, d in files) + str(duration).encode())
    e = Entry(key, ' + '.join(n for n, _ in files), 'features', features=arrays,
              duration=float(duration), clip_len=float(clip_len or duration / n))
    if self.synthetic is not None:
      self._render(e, self.synthetic.labels(arrays[0]))
    e.state, e.progress = 'ready', 1.0
    self.entries[key] = self.entries.get(key) or e
    return self.entries[key]

  def add_synthetic(self, vid: str) -> Entry:
    if self.synthetic is None:
      raise InputError('this workdir was not trained on the synthetic data')
    key = f'syn-{vid}'
    if key not in self.entries:
      video, row, stored = self.synthetic.video(vid)
      e = Entry(key, vid, 'synthetic', features=[video], duration=float(row['duration']),
                clip_len=float(self.p.config.data.get('clip_len') or 1.0), row=row,
                stored_query=stored)
      self._render(e, self.synthetic.labels(video))
      e.state, e.progress = 'ready', 1.0
      self.entries[key] = e
    return self.entries[key]

  def _render(self, e: Entry, labels: list) -> None:
    """A playable video of the concepts, and thumbnails from its frames."""
    e.labels = labels
    e.media = os.path.join(self.cache_dir, 'media', f'{e.id}.mp4')
    frames = media.render_concepts(e.media, labels, e.clip_len)
    e.thumbs = [media.jpeg(f[::2, ::2]) for f in frames]

  # ---- queries ----
  def _query_features(self, e: Entry, text: str, query_file: Optional[tuple]):
    if query_file is not None:
      name, data = query_file
      return load_array(name, data, ('last_hidden_state', 'features')), f'the file {name}'
    if not text.strip():
      raise InputError('type a query first (it is empty)')
    if self.synthetic is not None:
      try:
        return self.synthetic.encode(text, e.row, e.stored_query)
      except ValueError as ex:
        raise InputError(str(ex)) from None
    if self.text_reason is not None:
      raise InputError(self.text_reason)
    return self.p.encode_queries([text])[0], 'the CLIP text tower'

  def query(self, vid: str, text: str, top_k: int = 5,
            query_file: Optional[tuple] = None) -> dict:
    """Top-k moments of `text` (or of an uploaded query feature file) in video `vid`."""
    e = self.entry(vid)
    if e.state != 'ready':
      raise InputError(f'{e.name}: not ready ({e.state}{": " + e.message if e.message else ""})')
    text = (text or '').strip()
    key = text if query_file is None else f'file:{sha256(query_file[1])}'
    t0 = time.time()
    cached = key in e.answers
    if not cached:
      with self.lock:
        q, source = self._query_features(e, text, query_file)
        try:
          pred = self.p.predict(e.features, [q], e.duration, e.clip_len)[0]
        except ValueError as ex:
          raise InputError(str(ex)) from None
      e.answers[key] = dict(pred, text_source=source)
    pred = e.answers[key]
    moments = []
    for r, (s, t, score, count) in enumerate(distinct(pred['pred_relevant_windows'])
                                             [:max(1, int(top_k))]):
      clip = min(e.num_clips - 1, int((s + t) / 2 / e.clip_len))
      moments.append({'rank': r + 1, 'start': s, 'end': t, 'score': score,
                      'proposals': count,
                      'thumb': f'api/videos/{vid}/thumb/{clip}.jpg' if e.thumbs else None})
    return {'video': vid, 'query': text if query_file is None else query_file[0],
            'text_source': pred['text_source'], 'moments': moments,
            'saliency': pred['pred_saliency_scores'], 'duration': e.duration,
            'clip_len': e.clip_len, 'cached': cached, 'extract_s': e.extract_s,
            'seconds': round(time.time() - t0, 3)}


def distinct(windows: list) -> list:
  """[[start, end, score], ...] best first -> [[start, end, best score, count], ...]:
  windows equal to a better one are counted with it, not shown again (the spans of
  several proposals often round to the same clips)."""
  out, index = [], {}
  for s, t, score in windows:
    if (s, t) in index:
      out[index[(s, t)]][3] += 1
    else:
      index[(s, t)] = len(out)
      out.append([s, t, score, 1])
  return out


def _message(ex: Exception) -> str:
  text = str(ex) or type(ex).__name__
  return text if isinstance(ex, ValueError) else f'{type(ex).__name__}: {text}'
