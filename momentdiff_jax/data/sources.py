"""Reading and validating the Moment-DETR layout (annotations jsonl + feature files).

Every problem raises `DataError` naming the file, the line or qid/vid, and the field,
before anything is written or trained.

Window policy (documented, never silent):
  * `start >= end` -> error (file, line, qid, window).
  * start < 0 or end > duration by at most `tolerance` seconds -> the window is clipped
    into [0, duration] and counted in `stats['windows_clipped']` (the build summary
    prints the count). Public releases have such windows (Charades-CD ends up to 1.6 s
    past the duration, TACoS 0.5 s).
  * beyond `tolerance` -> error, or with `on_bad_window='drop'` the window is dropped
    and counted (`stats['windows_dropped']`); a row left without windows is dropped
    and counted (`stats['rows_dropped']`).
Rows without `relevant_windows` are allowed only where `require_windows=False`
(e.g. the QVHighlights test release, which has no labels): they get no targets.
"""
import json
import os
import pickle
import zipfile
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from momentdiff_jax.common.errors import DataError
from momentdiff_jax.common.jsonl import iter_jsonl, read_jsonl

REQUIRED_FIELDS = ('qid', 'query', 'vid', 'duration')


def validate_rows(rows: Iterable[dict], path: str, *, require_windows: bool = True,
                  tolerance: float = 2.0, on_bad_window: str = 'error',
                  stats: Optional[Dict[str, int]] = None) -> List[dict]:
  """Checks fields and windows of parsed rows; returns the rows to keep.

  Each kept row gets `windows`: float32 (W, 2) seconds, clipped into [0, duration].
  """
  kept, seen_qids = [], {}
  for row in rows:
    if 'qid' in row and row['qid'] in seen_qids:
      raise repeated_qid_error(path, row, seen_qids[row['qid']])
    if validate_row(row, path, require_windows=require_windows, tolerance=tolerance,
                    on_bad_window=on_bad_window, stats=stats):
      kept.append(row)
    seen_qids[row.get('qid')] = row
  return kept


def repeated_qid_error(path: str, row: dict, first: dict) -> DataError:
  """The error for `row` reusing the qid of the earlier row `first` of the same file."""
  copy = ('an exact copy of' if row_content(row, 'qid') == row_content(first, 'qid')
          else 'the same qid as')
  return DataError(f'{path}:{row.get("_line", "?")}: qid {row["qid"]!r}: this row is {copy} '
                   f'line {first.get("_line")} (text features are looked up by qid; give '
                   'each query its own qid)')


def validate_row(row: dict, path: str, *, require_windows: bool = True,
                 tolerance: float = 2.0, on_bad_window: str = 'error',
                 stats: Optional[Dict[str, int]] = None) -> bool:
  """Checks one row's fields and windows; returns whether to keep it.

  A kept row gets `windows`: float32 (W, 2) seconds, clipped into [0, duration].
  Duplicate qids are the caller's check (validate_rows, or build's streaming one).
  """
  if on_bad_window not in ('error', 'drop'):
    raise ValueError(f'on_bad_window must be error|drop, got {on_bad_window!r}')
  stats = stats if stats is not None else {}
  for k in ('windows_clipped', 'windows_dropped', 'rows_dropped', 'rows_unlabelled'):
    stats.setdefault(k, 0)
  where = f'{path}:{row.get("_line", "?")}'
  for field in REQUIRED_FIELDS:
    if field not in row:
      raise DataError(f'{where}: missing field {field!r} (row keys: '
                      f'{sorted(k for k in row if k != "_line")})')
  qid = row['qid']
  try:
    duration = float(row['duration'])
  except (TypeError, ValueError):
    raise DataError(f'{where}: qid {qid}: field "duration" is not a number: '
                    f'{row["duration"]!r}') from None
  if not np.isfinite(duration) or duration <= 0:
    raise DataError(f'{where}: qid {qid}: field "duration" must be > 0, got '
                    f'{row["duration"]!r}')
  if 'relevant_windows' not in row:
    if require_windows:
      raise DataError(f'{where}: qid {qid}: missing field "relevant_windows" '
                      '(required in training splits)')
    stats['rows_unlabelled'] += 1
    row['windows'] = np.zeros((0, 2), np.float32)
    return True
  wins = row['relevant_windows']
  if (not isinstance(wins, list) or not wins or
      not all(isinstance(w, (list, tuple)) and len(w) == 2 for w in wins)):
    raise DataError(f'{where}: qid {qid}: field "relevant_windows" must be a '
                    f'non-empty list of [start, end], got {wins!r}')
  good = []
  for s, e in wins:
    try:
      s, e = float(s), float(e)
    except (TypeError, ValueError):
      raise DataError(f'{where}: qid {qid}: relevant_windows entry {[s, e]} is '
                      'not numeric') from None
    if not (np.isfinite(s) and np.isfinite(e)) or s >= e:
      raise DataError(f'{where}: qid {qid}: relevant_windows entry {[s, e]} has '
                      'start >= end')
    if s < -tolerance or e > duration + tolerance:
      if on_bad_window == 'drop':
        stats['windows_dropped'] += 1
        continue
      raise DataError(
          f'{where}: qid {qid}: relevant_windows entry {[s, e]} lies outside '
          f'[0, duration={duration}] by more than the tolerance {tolerance} s '
          '(use --on_bad_window=drop to drop such windows)')
    if s < 0 or e > duration:
      stats['windows_clipped'] += 1
      s, e = max(s, 0.0), min(e, duration)
      if s >= e:
        raise DataError(f'{where}: qid {qid}: relevant_windows entry is empty '
                        f'after clipping into [0, {duration}]')
    good.append((s, e))
  if not good:
    stats['rows_dropped'] += 1
    return False
  row['windows'] = np.asarray(good, np.float32)
  return True


def row_content(row: dict, *ignore: str) -> str:
  """The row's annotation fields as canonical JSON (bookkeeping `_*` keys left out)."""
  return json.dumps({k: v for k, v in row.items() if not k.startswith('_') and k not in ignore
                     and k != 'windows'}, sort_keys=True)


def l2_normalize(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
  """(L, D) -> (L, D), each row divided by its norm (as the release does)."""
  return x / (np.linalg.norm(x, axis=-1, keepdims=True) + eps)


def avg_pool_clips(feats: np.ndarray, num_clips: int) -> np.ndarray:
  """(L_src, D) -> (num_clips, D): the release's `avgfeats` for C3D features."""
  n = feats.shape[0]
  edges = np.arange(num_clips + 1, dtype=np.float64) / num_clips * n
  # The release rounds when downsampling and floors when upsampling.
  edges = np.round(edges) if n >= num_clips else np.floor(edges)
  # The clamp to n - 1 also comes from the release (its last bin loses the last
  # source clip); kept so features match the released checkpoints.
  edges = np.minimum(edges.astype(np.int64), n - 1)
  out = np.empty((num_clips, feats.shape[1]), np.float32)
  for i in range(num_clips):
    s, e = edges[i], edges[i + 1]
    out[i] = feats[s:e].mean(0) if s < e else feats[s]
  return out


def _find_video_file(vid: str, feat_dir: str) -> Optional[str]:
  for name in (f'{vid}.npz', f'{vid}.npy'):
    p = os.path.join(feat_dir, name)
    if os.path.exists(p):
      return p
  return None


def check_video_files(vids: Sequence[str], feat_dirs: Sequence[str]) -> None:
  """Raises DataError listing the vids without a feature file (before any reading)."""
  missing = []
  for vid in vids:
    for d in feat_dirs:
      if _find_video_file(vid, d) is None:
        missing.append((vid, d))
  if missing:
    head = '; '.join(f'vid {v!r} (searched {d}/{v}.npz and {d}/{v}.npy)'
                     for v, d in missing[:10])
    more = f' ... and {len(missing) - 10} more' if len(missing) > 10 else ''
    raise DataError(f'missing video feature files for {len(missing)} '
                    f'(vid, dir) pairs: {head}{more}')


def _check_finite(x: np.ndarray, path: str, what: str) -> None:
  if not np.all(np.isfinite(x)):
    bad = np.argwhere(~np.isfinite(x))[0]
    raise DataError(f'{path}: {what} contain NaN/Inf (first at index {tuple(int(i) for i in bad)})')


# What NumPy raises on a truncated or foreign file (zip directory missing, member cut
# short, bad header, pickled payload).
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error,
                pickle.UnpicklingError)


def read_array(path: str, keys: Sequence[str]) -> np.ndarray:
  """The array of a `.npy`, or of the first of `keys` present in a `.npz`.

  A file NumPy cannot read raises DataError naming it and NumPy's complaint.
  """
  try:
    if path.endswith('.npy'):
      return np.load(path)
    with np.load(path) as z:
      key = next((k for k in keys if k in z.files), None)
      if key is None:
        raise DataError(f'{path}: no key {" or ".join(map(repr, keys))} in the npz; '
                        f'keys: {z.files}')
      return z[key]
  except DataError:
    raise
  except _READ_ERRORS as e:
    raise DataError(f'{path}: cannot read this feature file ({type(e).__name__}: {e}); '
                    'it is truncated or not a NumPy .npz/.npy file: extract or copy it '
                    'again') from None


def load_one_video_file(path: str) -> np.ndarray:
  """Returns float32 (L, D) from `.npy`, `.npz` key `features`, or C3D `.npz` `arr`."""
  x = np.asarray(read_array(path, ('features', 'arr')), np.float32)
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise DataError(f'{path}: video features must be (num_clips > 0, dim > 0), got '
                    f'shape {x.shape}')
  _check_finite(x, path, 'video features')
  return x


def combine_video_types(parts: Sequence[np.ndarray], normalize: bool = True,
                        pool_clips: int = 0) -> np.ndarray:
  """Per-type (L_i, D_i) arrays -> (min L_i, sum D_i) float32: each type L2-normalized
  per clip (if `normalize`), avg-pooled to `pool_clips` (if > 0), cut to the shortest
  (types differ by a clip or two) and concatenated."""
  if normalize:
    parts = [l2_normalize(x) for x in parts]
  if pool_clips:
    parts = [avg_pool_clips(x, pool_clips) for x in parts]
  n = min(p.shape[0] for p in parts)
  return np.concatenate([p[:n] for p in parts], axis=1).astype(np.float32)


class VideoReader:
  """Reads `<dir>/<vid>.npz|.npy` from several dirs into one (L, sum D) array.

  Each type is L2-normalized per clip (if `normalize`), optionally avg-pooled to
  `pool_clips` clips (C3D releases), cut to the shortest type and concatenated.
  The per-dir dims are fixed by the first video read; a different dim raises.
  """

  def __init__(self, feat_dirs: Sequence[str], normalize: bool = True,
               pool_clips: int = 0):
    self.feat_dirs = list(feat_dirs)
    self.normalize = normalize
    self.pool_clips = pool_clips
    self.dims: List[Optional[int]] = [None] * len(self.feat_dirs)
    self.first_file: List[Optional[str]] = [None] * len(self.feat_dirs)

  def __call__(self, vid: str) -> np.ndarray:
    parts = []
    for k, d in enumerate(self.feat_dirs):
      path = _find_video_file(vid, d)
      if path is None:
        raise DataError(f'missing video feature file for vid {vid!r}: searched '
                        f'{d}/{vid}.npz and {d}/{vid}.npy (dirs: {self.feat_dirs})')
      x = load_one_video_file(path)
      if self.dims[k] is None:
        self.dims[k], self.first_file[k] = x.shape[1], path
      elif x.shape[1] != self.dims[k]:
        raise DataError(f'{path}: feature dim {x.shape[1]} differs from dim '
                        f'{self.dims[k]} of {self.first_file[k]} (same feature dir)')
      parts.append(x)
    return combine_video_types(parts, self.normalize, self.pool_clips)


class TextReader:
  """Reads `<dir>/qid<qid>.npz` key `last_hidden_state` (Lt, Dt) or `pooler_output`."""

  def __init__(self, text_dir: str, key: str = 'last_hidden_state'):
    if key not in ('last_hidden_state', 'pooler_output'):
      raise ValueError(f'text feature key must be last_hidden_state|pooler_output, '
                       f'got {key!r}')
    self.text_dir, self.key = text_dir, key
    self.dim: Optional[int] = None
    self.first_file: Optional[str] = None

  def __call__(self, qid) -> np.ndarray:
    path = os.path.join(self.text_dir, f'qid{qid}.npz')
    if not os.path.exists(path):
      raise DataError(f'missing text feature file for qid {qid}: {path}')
    x = np.asarray(read_array(path, (self.key,)), np.float32)
    if x.ndim == 1:          # pooler_output: one vector per query
      x = x[None]
    if x.ndim == 3 and x.shape[0] == 1:   # saved with a batch axis
      x = x[0]
    if x.ndim != 2 or x.size == 0:
      raise DataError(f'{path}: empty or malformed query feature {self.key!r} of '
                      f'shape {x.shape} for qid {qid} (need (num_tokens > 0, dim))')
    _check_finite(x, path, 'query features')
    if self.dim is None:
      self.dim, self.first_file = x.shape[1], path
    elif x.shape[1] != self.dim:
      raise DataError(f'{path}: text feature dim {x.shape[1]} differs from dim '
                      f'{self.dim} of {self.first_file}')
    return x


def check_duration(row: dict, num_clips: int, clip_len: float, path_hint: str) -> None:
  """Duration must agree with num_clips * clip_len within one clip."""
  dur = float(row['duration'])
  if abs(num_clips * clip_len - dur) > clip_len + 1e-6:
    raise DataError(
        f'{path_hint}: vid {row["vid"]!r} has {num_clips} clips x clip_len {clip_len} '
        f'= {num_clips * clip_len:.2f} s but the annotation (qid {row["qid"]}) says '
        f'duration {dur} s: they differ by more than one clip (wrong --clip_len or '
        'feature files?)')
