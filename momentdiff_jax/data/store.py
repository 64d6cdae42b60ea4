"""The on-disk dataset: a video-keyed store of `.npy` arrays, written streaming.

Each video's (normalized, concatenated) clip features are stored once, whatever the
number of queries that share it; a query record holds the video's index, its text
features and its GT windows (docs/DESIGN.md, "Dataset store", says why this format).
Layout of a dataset dir (what `data_prep/build_dataset.py` and the synthetic
generator write into a temp dir that is renamed into place on success):

  metadata.json            format, format_version, feature_dtype, dims, clip_len,
                           counts, num_videos, sources, build summary, ... (a JSON
                           object: later versions add keys, readers ignore unknown ones)
  videos.npy               (C, Dv) all videos' clips, video after video
  video_offsets.npy        (V + 1,) int64: video v is rows [off[v], off[v + 1])
  video_ids.jsonl          the vid of every video, one JSON string per line
  <split>_records.npy      (N,) RECORD: video, num_clips, text / window slices,
                           duration, time_scale, min_start (planning reads only this)
  <split>_text.npy         (T, Dt) every query's token features, query after query
  <split>_windows.npy      (W, 2) float32 GT windows in seconds
  <split>_rows.jsonl       the annotation rows, row i = record i

Features are stored as `feature_dtype` (float32, float16, or bfloat16 kept as its
uint16 bit pattern, since `.npy` has no bfloat16); readers widen to float32.
Video features are stored L2-normalized per type (metadata `normalize_video`); text
tokens are raw (normalized and cut to max_q_l at load time), videos keep every clip
(the max_v_l cut is a load-time choice). `time_scale` is the seconds the stored clips
span: num_clips * clip_len, or the duration for pooled data (C3D).
"""
import json
import os
import shutil
import tempfile
from typing import Dict, Iterator, List, Optional

import numpy as np

from momentdiff_jax.common.errors import DataError

FORMAT = 'momentdiff_jax.video_keyed_store'
FORMAT_VERSION = '2.0.0'
SPLITS = ('train', 'val', 'test')
FEATURE_DTYPES = ('float32', 'float16', 'bfloat16')
RECORD = np.dtype([('video', '<i8'), ('num_clips', '<i4'), ('text_start', '<i8'),
                   ('text_len', '<i4'), ('win_start', '<i8'), ('win_len', '<i4'),
                   ('duration', '<f4'), ('time_scale', '<f4'), ('min_start', '<f4')])
_F16_MAX = float(np.finfo(np.float16).max)


def clean_row(row: dict) -> dict:
  """The annotation row as written to `<split>_rows.jsonl` (no private keys)."""
  return {k: v for k, v in row.items() if not k.startswith('_') and k != 'windows'}


def _disk_dtype(feature_dtype: str) -> np.dtype:
  return np.dtype(np.uint16 if feature_dtype == 'bfloat16' else feature_dtype)


def encode_features(x: np.ndarray, feature_dtype: str, what: str) -> np.ndarray:
  """float32 (L, D) -> the stored array; values float16 cannot hold raise DataError."""
  x = np.asarray(x, np.float32)
  if feature_dtype == 'float32':
    return x
  if feature_dtype == 'float16':
    big = float(np.abs(x).max(initial=0.0))
    if big > _F16_MAX:
      raise DataError(f'{what}: a value of magnitude {big:.4g} overflows float16 '
                      f'(max {_F16_MAX:.0f}); use --feature_dtype=bfloat16 or float32')
    return x.astype(np.float16)
  import ml_dtypes  # a JAX dependency; rounds to nearest even
  return x.astype(ml_dtypes.bfloat16).view(np.uint16)


def decode_into(dst: np.ndarray, src: np.ndarray, feature_dtype: str) -> None:
  """Writes stored features `src` into float32 `dst` (same shape), widening in one pass."""
  if feature_dtype == 'bfloat16':
    # bfloat16 is the top half of a float32: shift the bits, no rounding involved.
    np.left_shift(src, np.uint32(16), out=dst.view(np.uint32), casting='unsafe')
  else:
    np.copyto(dst, src, casting='unsafe')


def decode(src: np.ndarray, feature_dtype: str) -> np.ndarray:
  out = np.empty(src.shape, np.float32)
  decode_into(out, src, feature_dtype)
  return out


class NpyAppender:
  """Writes a `.npy` file of rows (n, *row_shape) whose n is known only at the end.

  numpy's header leaves room for the first axis to grow (GROWTH_AXIS_MAX_DIGITS), so
  the header written at open is rewritten in place with the final shape at close.
  """

  def __init__(self, path: str, dtype, row_shape=()):
    self.path, self.dtype, self.row_shape, self.n = path, np.dtype(dtype), tuple(row_shape), 0
    self._f = open(path, 'wb')
    self._write_header()
    self._data_start = self._f.tell()

  def _write_header(self):
    np.lib.format.write_array_header_1_0(self._f, {
        'descr': np.lib.format.dtype_to_descr(self.dtype), 'fortran_order': False,
        'shape': (self.n,) + self.row_shape})

  def append(self, rows: np.ndarray) -> int:
    """Appends (k, *row_shape) rows; returns the index of the first one."""
    rows = np.ascontiguousarray(rows, self.dtype)
    assert rows.shape[1:] == self.row_shape, (self.path, rows.shape, self.row_shape)
    start = self.n
    self._f.write(rows.tobytes())
    self.n += rows.shape[0]
    return start

  def close(self):
    if self._f is None:
      return
    self._f.seek(0)
    self._write_header()
    assert self._f.tell() == self._data_start, 'npy header changed size'
    self._f.close()
    self._f = None


class DatasetWriter:
  """Streams videos and query records into a temp dir; `commit()` renames it.

  Use as a context manager: on an exception the temp dir is removed, so nothing
  half-written is ever left at `output_dir`. Memory stays flat in the number of
  queries: every array goes to disk as it is added; only the vid -> index map and
  each video's clip count (O(videos)) stay in RAM.
  """

  def __init__(self, output_dir: str, feature_dtype: str = 'float32',
               overwrite: bool = False):
    if feature_dtype not in FEATURE_DTYPES:
      raise ValueError(f'feature_dtype must be one of {FEATURE_DTYPES}, got '
                       f'{feature_dtype!r}')
    self.output_dir = os.path.abspath(output_dir)
    if os.path.exists(self.output_dir) and os.listdir(self.output_dir) and not overwrite:
      raise FileExistsError(f'{self.output_dir} exists and is not empty')
    self.overwrite, self.feature_dtype = overwrite, feature_dtype
    self._disk = _disk_dtype(feature_dtype)
    parent = os.path.dirname(self.output_dir)
    os.makedirs(parent, exist_ok=True)
    self.tmp = tempfile.mkdtemp(prefix='.tmp-' + os.path.basename(self.output_dir),
                                dir=parent)
    self.video_dim: Optional[int] = None
    self.text_dim: Optional[int] = None
    self._video_index: Dict[str, int] = {}
    self._video_clips: List[int] = []
    self._videos = self._offsets = self._ids = None
    self._splits: Dict[str, dict] = {}
    self.feature_bytes = 0      # stored bytes of unique video + text features

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      self.abort()
    return False

  def _files(self):
    """Every open output: the .npy appenders and the jsonl text files."""
    files = [self._videos, self._offsets, self._ids]
    for s in self._splits.values():
      files += [s['records'], s['text'], s['windows'], s['rows']]
    return [f for f in files if f is not None]

  def abort(self):
    for f in self._files():
      try:
        f.close()
      except Exception:  # pylint: disable=broad-except
        pass
    shutil.rmtree(self.tmp, ignore_errors=True)

  def _path(self, name: str) -> str:
    return os.path.join(self.tmp, name)

  # -- videos ----------------------------------------------------------------------
  @property
  def num_videos(self) -> int:
    return len(self._video_clips)

  def has_video(self, vid: str) -> bool:
    return vid in self._video_index

  def video_index(self, vid: str) -> int:
    return self._video_index[vid]

  def num_clips(self, video: int) -> int:
    return self._video_clips[video]

  def add_video(self, vid: str, video: np.ndarray, what: str = '') -> int:
    """Stores (L, Dv) float32 features of `vid` once; returns its index."""
    if vid in self._video_index:
      raise ValueError(f'video {vid!r} added twice')
    if self._videos is None:
      self.video_dim = int(video.shape[1])
      self._videos = NpyAppender(self._path('videos.npy'), self._disk, (self.video_dim,))
      self._offsets = NpyAppender(self._path('video_offsets.npy'), np.int64)
      self._offsets.append(np.zeros((1,), np.int64))
      self._ids = open(self._path('video_ids.jsonl'), 'w')
    if video.ndim != 2 or video.shape[1] != self.video_dim or not len(video):
      raise DataError(f'{what or vid}: video features of shape {video.shape}, '
                      f'expected (num_clips > 0, {self.video_dim})')
    enc = encode_features(video, self.feature_dtype, what or f'vid {vid!r}')
    self._videos.append(enc)
    self._offsets.append(np.asarray([self._videos.n], np.int64))
    self._ids.write(json.dumps(vid) + '\n')
    self.feature_bytes += enc.nbytes
    index = len(self._video_clips)
    self._video_index[vid] = index
    self._video_clips.append(int(video.shape[0]))
    return index

  # -- queries ---------------------------------------------------------------------
  def _split(self, split: str) -> dict:
    if split not in self._splits:
      self._splits[split] = {
          'records': NpyAppender(self._path(f'{split}_records.npy'), RECORD),
          'text': NpyAppender(self._path(f'{split}_text.npy'), self._disk,
                              (self.text_dim,)),
          'windows': NpyAppender(self._path(f'{split}_windows.npy'), np.float32, (2,)),
          'rows': open(self._path(f'{split}_rows.jsonl'), 'w')}
    return self._splits[split]

  def add_query(self, split: str, video: int, query: np.ndarray, windows,
                duration: float, time_scale: float, row: dict, what: str = '') -> int:
    """Appends one query record of stored video `video`; returns its index in `split`.

    query: (Lt, Dt) float32 token features; windows: (W, 2) seconds (W may be 0).
    """
    if self.text_dim is None:
      self.text_dim = int(query.shape[1])
    if query.ndim != 2 or query.shape[1] != self.text_dim or not len(query):
      raise DataError(f'{what or "query"}: text features of shape {query.shape}, '
                      f'expected (num_tokens > 0, {self.text_dim})')
    s = self._split(split)
    windows = np.asarray(windows, np.float32).reshape(-1, 2)
    enc = encode_features(query, self.feature_dtype, what or f'qid {row.get("qid")}')
    rec = np.zeros((1,), RECORD)
    rec['video'], rec['num_clips'] = video, self._video_clips[video]
    rec['text_start'], rec['text_len'] = s['text'].append(enc), len(enc)
    rec['win_start'], rec['win_len'] = s['windows'].append(windows), len(windows)
    rec['duration'], rec['time_scale'] = duration, time_scale
    rec['min_start'] = windows[:, 0].min() if len(windows) else -1.0
    s['rows'].write(json.dumps(clean_row(row)) + '\n')
    self.feature_bytes += enc.nbytes
    return s['records'].append(rec)

  def add(self, split: str, ex: dict) -> int:
    """One example dict (video, query, windows, duration, time_scale, row); the video
    is stored under `row['vid']` the first time that vid is seen."""
    vid = str(ex['row']['vid'])
    v = (self._video_index[vid] if vid in self._video_index
         else self.add_video(vid, np.asarray(ex['video'], np.float32)))
    return self.add_query(split, v, np.asarray(ex['query'], np.float32), ex['windows'],
                          float(ex['duration']), float(ex['time_scale']), ex['row'])

  def commit(self, metadata: dict) -> str:
    """Closes the files, writes metadata.json, renames the temp dir into place."""
    for f in self._files():
      f.close()
    counts = {name: s['records'].n for name, s in self._splits.items()}
    meta = dict(metadata, format=FORMAT, format_version=FORMAT_VERSION,
                feature_dtype=self.feature_dtype, counts=counts,
                num_videos=len(self._video_clips), num_clips=self._videos.n,
                video_feature_dim=self.video_dim, text_dim=self.text_dim,
                unique_feature_bytes=self.feature_bytes)
    with open(self._path('metadata.json'), 'w') as f:
      json.dump(meta, f, indent=1)
    if os.path.exists(self.output_dir):
      if not self.overwrite and os.listdir(self.output_dir):
        self.abort()
        raise FileExistsError(f'{self.output_dir} appeared while writing')
      shutil.rmtree(self.output_dir)
    os.rename(self.tmp, self.output_dir)
    return self.output_dir


# ------------------------------------------------------------------ reading


def _read_metadata(data_dir: str) -> dict:
  path = os.path.join(data_dir, 'metadata.json')
  with open(path) as f:
    meta = json.load(f)
  if meta.get('format') != FORMAT or meta.get('format_version', '').split('.')[0] != \
      FORMAT_VERSION.split('.')[0]:
    found = meta.get('format_version', 'unknown')
    raise DataError(
        f'{data_dir}: dataset format {found} (one record per query, video features '
        f'repeated in every record) was written by an older momentdiff_jax; this '
        f'version reads format {FORMAT_VERSION} (each video stored once). Rebuild it '
        'with data_prep/build_dataset.py (same flags; its sources are listed in '
        f'{path}), or delete it if it is the cached synthetic dataset.')
  return meta


def load_dataset_info(data_dir: str, use_tef: bool = True) -> dict:
  """Dataset facts for configs and the model.

  Returns dict(video_dim (batch feature dim: stored dim + 2 when `use_tef`),
  video_feature_dim (stored), text_dim, clip_len (seconds, None when pooled),
  counts {split: n}, splits, feature_dtype, plus everything else build time recorded
  (sources, normalize_video, pool_clips, text_key, summary, ...).
  Raises DataError (saying to rebuild) for datasets of an older format.
  """
  meta = _read_metadata(data_dir)
  meta['video_dim'] = meta['video_feature_dim'] + (2 if use_tef else 0)
  meta['splits'] = sorted(meta['counts'])
  return meta


def load_rows(data_dir: str, split: str) -> List[dict]:
  """The annotation rows of a split, row i = example `index` i: qid, query, vid,
  duration, relevant_windows and, where the source has them, relevant_clip_ids and
  saliency_scores (as in the source jsonl)."""
  with open(os.path.join(data_dir, f'{split}_rows.jsonl')) as f:
    return [json.loads(l) for l in f if l.strip()]


class SplitReader:
  """Random access to one split's examples, memory-mapped (shared page cache).

  `records` is the (N,) RECORD array; `video(v)` and `text(i)` return stored-dtype
  views (no copy), `example(i)` one example as float32 arrays.
  Pickles without its arrays (reopened lazily), so worker processes can receive it.
  """

  def __init__(self, data_dir: str, split: str):
    self.data_dir, self.split = data_dir, split
    meta = _read_metadata(data_dir)
    if split not in meta['counts']:
      raise ValueError(f'split {split!r} not in dataset {data_dir} '
                       f'(has {sorted(meta["counts"])})')
    self.feature_dtype = meta['feature_dtype']
    self.video_dim, self.text_dim = meta['video_feature_dim'], meta['text_dim']
    self._arrays = None

  def __getstate__(self):
    return dict(self.__dict__, _arrays=None)

  def _open(self) -> dict:
    if self._arrays is None:
      def load(name):
        a = np.load(os.path.join(self.data_dir, name), mmap_mode='r')
        return a.view(np.ndarray)   # plain ndarray views slice faster than np.memmap
      self._arrays = {
          'videos': load('videos.npy'),
          'offsets': np.load(os.path.join(self.data_dir, 'video_offsets.npy')),
          'records': load(f'{self.split}_records.npy'),
          'text': load(f'{self.split}_text.npy'),
          'windows': load(f'{self.split}_windows.npy')}
    return self._arrays

  @property
  def records(self) -> np.ndarray:
    return self._open()['records']

  def __len__(self) -> int:
    return len(self.records)

  @property
  def videos(self) -> np.ndarray:
    """(C, Dv) stored clips of all videos."""
    return self._open()['videos']

  @property
  def video_offsets(self) -> np.ndarray:
    return self._open()['offsets']

  @property
  def texts(self) -> np.ndarray:
    """(T, Dt) stored tokens of all the split's queries."""
    return self._open()['text']

  def video(self, v: int) -> np.ndarray:
    a = self._open()
    return a['videos'][a['offsets'][v]:a['offsets'][v + 1]]

  def text(self, rec) -> np.ndarray:
    s = int(rec['text_start'])
    return self._open()['text'][s:s + int(rec['text_len'])]

  def windows(self, rec) -> np.ndarray:
    s = int(rec['win_start'])
    return self._open()['windows'][s:s + int(rec['win_len'])]

  def example(self, i: int) -> dict:
    """Example i as float32 arrays: video (L, Dv), query (Lt, Dt), windows (W, 2),
    duration, time_scale, index."""
    rec = self.records[i]
    return {'video': decode(self.video(int(rec['video'])), self.feature_dtype),
            'query': decode(self.text(rec), self.feature_dtype),
            'windows': np.array(self.windows(rec)),
            'duration': np.float32(rec['duration']),
            'time_scale': np.float32(rec['time_scale']), 'index': int(i)}

  def __getitem__(self, i: int) -> dict:
    return self.example(i)


def iter_split(data_dir: str, split: str) -> Iterator[dict]:
  src = SplitReader(data_dir, split)
  for i in range(len(src)):
    yield src.example(i)


def dir_bytes(path: str) -> int:
  """Bytes of all files under `path`."""
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)
