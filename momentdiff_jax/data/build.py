"""Build a dataset from annotation jsonl files and per-video feature files.

The logic behind `data_prep/build_dataset.py`. All cheap checks (jsonl syntax,
fields, windows, presence of every feature file) run before any feature is read;
reading checks dims, NaN/Inf, empty queries and duration vs clip count. Output goes
through `store.DatasetWriter` (temp dir + rename), so a failed build leaves nothing
under `output`. Memory is flat in the number of queries: rows stream from the files
twice (check, then write) and each video is read and stored once.
"""
import collections
import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from momentdiff_jax.common import records
from momentdiff_jax.common.errors import DataError
from momentdiff_jax.data import checks
from momentdiff_jax.data import sources
from momentdiff_jax.data import store


def pick_val_videos(vids, fraction: float, seed: int) -> set:
  """The seeded share of training videos that becomes val."""
  vids = sorted(vids)
  rng = np.random.default_rng(seed)
  n_val = max(1, int(round(fraction * len(vids)))) if len(vids) > 1 else 0
  return set(np.asarray(vids, dtype=object)[rng.permutation(len(vids))[:n_val]])


class _Stats:
  """Running min / mean / max (the build keeps no per-query lists)."""

  def __init__(self):
    self.n, self.total, self.lo, self.hi = 0, 0.0, np.inf, -np.inf

  def add(self, x):
    x = np.asarray(x, np.float64).ravel()
    if x.size:
      self.n += x.size
      self.total += float(x.sum())
      self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

  def summary(self) -> Dict[str, float]:
    if not self.n:
      return {}
    return {'min': round(self.lo, 3), 'mean': round(self.total / self.n, 3),
            'max': round(self.hi, 3)}


def build_dataset(*, train: str, test: str, video_dirs: Sequence[str],
                  text_dir: str, clip_len: float, output: str,
                  val: Optional[str] = None, val_fraction: float = 0.1,
                  seed: int = 0, text_key: str = 'last_hidden_state',
                  pool_clips: int = 0, normalize_video: bool = True,
                  tolerance: float = 2.0, on_bad_window: str = 'error',
                  feature_dtype: str = 'float32',
                  max_rows: int = 0, overwrite: bool = False,
                  progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
  """Builds the dataset at `output`; returns the summary dict (also logged).

  Two streaming passes over the annotation files: the first checks every row and
  the presence of every feature file (no feature is read), the second reads each
  video once (on its first query), stores it, and appends each query's record. RAM
  holds O(videos) bookkeeping (the first pass's per-row keys are in an on-disk table,
  `checks.RowDB`), never features of more than one video and one query.

  Args:
    clip_len: seconds per clip (ignored for targets when `pool_clips` > 0: then
      every video has `pool_clips` clips spanning its duration).
    pool_clips: > 0 average-pools each feature type to that many clips (C3D).
    feature_dtype: float32 | float16 | bfloat16, the stored features' dtype.
    max_rows: > 0 keeps only the first rows of every file (quick builds, tests).
  """
  if feature_dtype not in store.FEATURE_DTYPES:
    raise ValueError(f'feature_dtype must be one of {store.FEATURE_DTYPES}, got '
                     f'{feature_dtype!r}')
  build = _Build({'train': train, 'val': val, 'test': test}, output, list(video_dirs),
                 text_dir, clip_len, val_fraction, seed, pool_clips, tolerance,
                 on_bad_window, max_rows, log)
  build.check()
  video_reader = sources.VideoReader(video_dirs, normalize_video, pool_clips)
  writer = store.DatasetWriter(output, feature_dtype=feature_dtype, overwrite=overwrite)
  with writer:
    summary = build.write(writer, video_reader, sources.TextReader(text_dir, text_key),
                          progress)
    metadata = build.metadata(summary, video_reader.dims, text_key, normalize_video)
    writer.commit(metadata)
  log(f'Wrote {output} ({writer.num_videos} videos stored once, features as '
      f'{feature_dtype})')
  for s in ('train', 'val', 'test'):
    log(f'  {s:5s}: {summary["counts"][s]} queries, {summary["videos"][s]} videos')
  for k, v in summary['length_stats'].items():
    log(f'  {k}: {v}')
  log(f'  video dim {writer.video_dim} (per dir {video_reader.dims}), text dim '
      f'{writer.text_dim}, clip_len {metadata["clip_len"]}')
  if build.stats:
    log(f'  window/row checks: {dict(build.stats)}')
  return summary


@dataclasses.dataclass
class _Build:
  """One build's settings and what its checking pass learns for the writing pass."""
  files: Dict[str, Optional[str]]     # split -> annotation file (no val: None)
  output: str
  video_dirs: List[str]
  text_dir: str
  clip_len: float
  val_fraction: float
  seed: int
  pool_clips: int
  tolerance: float
  on_bad_window: str
  max_rows: int
  log: Callable[[str], None]
  stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  val_vids: set = dataclasses.field(default_factory=set)   # train videos moved to val
  all_vids: List[str] = dataclasses.field(default_factory=list)

  def check_kw(self, file_split: str) -> dict:
    return dict(require_windows=(file_split == 'train'), tolerance=self.tolerance,
                on_bad_window=self.on_bad_window)

  def split_of(self, file_split: str, vid) -> str:
    return 'val' if file_split == 'train' and vid in self.val_vids else file_split

  def _given(self):
    return [(split, path) for split, path in self.files.items() if path is not None]

  def check(self):
    """The first pass: every row checked, val taken from train when no val file is
    given, splits disjoint, duplicates noted, every feature file present (none read)."""
    # Per-row bookkeeping of the checking pass lives on disk (flat RSS in queries).
    with checks.RowDB(self.output) as db:
      indexes = []
      for split, path in self._given():
        counts = {}
        indexes.append(checks.check_file(path, split, self.max_rows, self.check_kw(split),
                                         self.text_dir, counts, db, len(indexes)))
        self.stats.update({f'{split}_{k}': v for k, v in counts.items() if v})
      vids = {ix.split: set(ix.vid_queries) for ix in indexes}
      if self.files['val'] is None:
        self.val_vids.update(pick_val_videos(vids['train'], self.val_fraction, self.seed))
        vids['train'], vids['val'] = vids['train'] - self.val_vids, self.val_vids
        n_val = sum(indexes[0].vid_queries[v] for v in self.val_vids)
        self.log(f'No --val given: {len(self.val_vids)} of the training videos '
                 f'({self.val_fraction:.0%}, seed {self.seed}) and their {n_val} queries '
                 'form the val split.')
      for split in ('train', 'val', 'test'):
        if not vids.get(split):
          raise DataError(f'split {split!r} has no rows after validation')

      def row_split(index, row):
        return self.split_of(index.split, row['vid'])
      checks.check_splits_disjoint(indexes, self.max_rows, row_split)
      for index in indexes:
        checks.note_duplicate_rows(index, self.max_rows, row_split, self.stats, self.log)
    # Presence of every file before reading any (one error listing them all).
    self.all_vids = sorted(set().union(*vids.values()))
    sources.check_video_files(self.all_vids, self.video_dirs)

  def write(self, writer, video_reader, text_reader, progress: bool) -> dict:
    """The second pass: each checked row's video (once) and query into `writer`.
    Returns the summary: counts, videos and length statistics per split, checks."""
    lengths = collections.defaultdict(_Stats)
    counts = collections.Counter()
    split_vids = collections.defaultdict(set)
    bar = None
    if progress:
      from tqdm import tqdm
      bar = tqdm(total=len(self.all_vids), desc='videos', unit='video')
    for file_split, path in self._given():
      for r in checks.iter_rows(path, self.max_rows):
        if not sources.validate_row(r, path, stats={}, **self.check_kw(file_split)):
          continue
        split = self.split_of(file_split, r['vid'])
        r['_file'] = path
        _add_query(writer, split, r, video_reader, text_reader, self.clip_len,
                   self.pool_clips, self.video_dirs, self.text_dir, lengths, split_vids, bar)
        counts[split] += 1
    if bar is not None:
      bar.close()
    return {
        'counts': {s: counts[s] for s in ('train', 'val', 'test')},
        'videos': {s: len(split_vids[s]) for s in ('train', 'val', 'test')},
        'length_stats': {k: v.summary() for k, v in sorted(lengths.items())},
        'checks': dict(self.stats),
    }

  def metadata(self, summary: dict, video_dims: list, text_key: str,
               normalize_video: bool) -> dict:
    """The dataset's metadata.json."""
    val = self.files['val']
    return {
        'clip_len': None if self.pool_clips else float(self.clip_len),
        'pool_clips': int(self.pool_clips), 'normalize_video': bool(normalize_video),
        'text_key': text_key, 'video_dims_per_dir': video_dims,
        'sources': {'train': os.path.abspath(self.files['train']),
                    'val': os.path.abspath(val) if val else None,
                    'test': os.path.abspath(self.files['test']),
                    'video_features': [os.path.abspath(d) for d in self.video_dirs],
                    'text_features': os.path.abspath(self.text_dir)},
        'val_from_train': val is None,
        'val_fraction': self.val_fraction if val is None else None, 'seed': self.seed,
        'window_tolerance_s': self.tolerance, 'on_bad_window': self.on_bad_window,
        'summary': summary,
        # What extracted the features (Predictor.predict_video checks its backbones).
        'backbones': {'video': [records.read_record(d) for d in self.video_dirs],
                      'text': records.read_record(self.text_dir)},
    }


def _add_query(writer, split, r, video_reader, text_reader, clip_len, pool_clips,
               video_dirs, text_dir, lengths, split_vids, bar):
  """Stores r's video if it is new, then appends r's query record to `split`."""
  vid = r['vid']
  if not writer.has_video(vid):
    writer.add_video(vid, video_reader(vid), what=f'vid {vid!r} ({video_dirs})')
    if bar is not None:
      bar.update(1)
  v = writer.video_index(vid)
  n = writer.num_clips(v)
  if vid not in split_vids[split]:
    split_vids[split].add(vid)
    lengths[f'{split}_clips'].add(n)
  if pool_clips:
    time_scale = float(r['duration'])
  else:
    sources.check_duration(r, n, clip_len, f'{r["_file"]}:{r["_line"]} / {video_dirs}')
    time_scale = n * clip_len
  query = text_reader(r['qid'])
  writer.add_query(split, v, query, r['windows'], float(r['duration']), time_scale, r,
                   what=os.path.join(text_dir, f'qid{r["qid"]}.npz'))
  lengths[f'{split}_tokens'].add(query.shape[0])
  lengths[f'{split}_window_s'].add(r['windows'][:, 1] - r['windows'][:, 0])
