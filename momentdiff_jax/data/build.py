"""Build a dataset from annotation jsonl files and per-video feature files.

The logic behind `data_prep/build_dataset.py`. All cheap checks (jsonl syntax,
fields, windows, presence of every feature file) run before any feature is read;
reading checks dims, NaN/Inf, empty queries and duration vs clip count. Output goes
through `store.DatasetWriter` (temp dir + rename), so a failed build leaves nothing
under `output`.
"""
import collections
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from momentdiff_jax.data import sources
from momentdiff_jax.data import store
from momentdiff_jax.data.sources import DataError
from momentdiff_jax.features import records


def split_train_videos(rows: List[dict], fraction: float, seed: int):
  """Moves a fixed share of the training *videos* (not queries) to val."""
  vids = sorted({r['vid'] for r in rows})
  rng = np.random.default_rng(seed)
  n_val = max(1, int(round(fraction * len(vids)))) if len(vids) > 1 else 0
  val_vids = set(np.asarray(vids, dtype=object)[rng.permutation(len(vids))[:n_val]])
  return ([r for r in rows if r['vid'] not in val_vids],
          [r for r in rows if r['vid'] in val_vids])


def _stats(x) -> Dict[str, float]:
  x = np.asarray(x, np.float64)
  if x.size == 0:
    return {}
  return {'min': round(float(x.min()), 3), 'mean': round(float(x.mean()), 3),
          'max': round(float(x.max()), 3)}


def build_dataset(*, train: str, test: str, video_dirs: Sequence[str],
                  text_dir: str, clip_len: float, output: str,
                  val: Optional[str] = None, val_fraction: float = 0.1,
                  seed: int = 0, text_key: str = 'last_hidden_state',
                  pool_clips: int = 0, normalize_video: bool = True,
                  tolerance: float = 2.0, on_bad_window: str = 'error',
                  max_rows: int = 0, overwrite: bool = False,
                  progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
  """Builds the dataset at `output`; returns the summary dict (also logged).

  Args:
    clip_len: seconds per clip (ignored for targets when `pool_clips` > 0: then
      every video has `pool_clips` clips spanning its duration).
    pool_clips: > 0 average-pools each feature type to that many clips (C3D).
    max_rows: > 0 keeps only the first rows of every file (quick builds, tests).
  """
  stats = collections.Counter()
  files = {'train': train, 'val': val, 'test': test}
  splits: Dict[str, List[dict]] = {}
  for split, path in files.items():
    if path is None:
      continue
    rows = sources.read_jsonl(path)
    if max_rows > 0:
      rows = rows[:max_rows]
    for r in rows:
      r['_file'] = path
    counts = {}
    splits[split] = sources.validate_rows(
        rows, path, require_windows=(split == 'train'), tolerance=tolerance,
        on_bad_window=on_bad_window, stats=counts)
    stats.update({f'{split}_{k}': v for k, v in counts.items() if v})
  if val is None:
    splits['train'], splits['val'] = split_train_videos(
        splits['train'], val_fraction, seed)
    log(f'No --val given: {len({r["vid"] for r in splits["val"]})} of the training '
        f'videos ({val_fraction:.0%}, seed {seed}) and their {len(splits["val"])} '
        'queries form the val split.')
  for split in ('train', 'val', 'test'):
    if not splits.get(split):
      raise DataError(f'split {split!r} has no rows after validation')
  sources.check_splits_disjoint(splits)
  for split in ('train', 'val', 'test'):
    dups = sources.duplicate_rows(splits[split])
    if dups:
      stats[f'{split}_duplicate_rows'] = len(dups)
      log(f'Note: {len(dups)} {split} rows repeat an earlier row but for the qid (same vid, '
          'query, duration, windows); kept as in the source. First: ' +
          ', '.join(f'qid {r["qid"]} = qid {e["qid"]} ({r["_file"]}:{r["_line"]})'
                    for r, e in dups[:5]))

  # Presence of every file before reading any (one error listing them all).
  all_vids = sorted({r['vid'] for rows in splits.values() for r in rows})
  sources.check_video_files(all_vids, video_dirs)
  missing_q = [(r['qid'], r['_file'], r['_line']) for rows in splits.values()
               for r in rows
               if not os.path.exists(os.path.join(text_dir, f'qid{r["qid"]}.npz'))]
  if missing_q:
    head = '; '.join(f'qid {q} ({f}:{l})' for q, f, l in missing_q[:10])
    raise DataError(f'missing text feature files {text_dir}/qid<qid>.npz for '
                    f'{len(missing_q)} queries: {head}')

  video_reader = sources.VideoReader(video_dirs, normalize_video, pool_clips)
  text_reader = sources.TextReader(text_dir, text_key)
  first = splits['train'][0]
  writer = store.DatasetWriter(output, video_dim=video_reader(first['vid']).shape[1],
                               text_dim=text_reader(first['qid']).shape[1],
                               overwrite=overwrite)
  lengths = collections.defaultdict(list)
  with writer:
    n_videos = sum(len({r['vid'] for r in rows}) for rows in splits.values())
    bar = None
    if progress:
      from tqdm import tqdm
      bar = tqdm(total=n_videos, desc='videos', unit='video')
    for split in ('train', 'val', 'test'):
      by_vid = collections.OrderedDict()
      for r in splits[split]:
        by_vid.setdefault(r['vid'], []).append(r)
      for vid, rows in by_vid.items():
        video = video_reader(vid)
        n = video.shape[0]
        for r in rows:
          if pool_clips:
            time_scale = float(r['duration'])
          else:
            sources.check_duration(r, n, clip_len,
                                   f'{r["_file"]}:{r["_line"]} / {video_dirs}')
            time_scale = n * clip_len
          query = text_reader(r['qid'])
          writer.add(split, {'video': video, 'query': query, 'windows': r['windows'],
                             'duration': float(r['duration']),
                             'time_scale': time_scale, 'row': r})
          lengths[f'{split}_tokens'].append(query.shape[0])
          lengths[f'{split}_window_s'].extend(r['windows'][:, 1] - r['windows'][:, 0])
        lengths[f'{split}_clips'].append(n)
        if bar is not None:
          bar.update(1)
    if bar is not None:
      bar.close()
    summary = {
        'counts': {s: len(splits[s]) for s in ('train', 'val', 'test')},
        'videos': {s: len({r['vid'] for r in splits[s]})
                   for s in ('train', 'val', 'test')},
        'length_stats': {k: _stats(v) for k, v in sorted(lengths.items())},
        'checks': dict(stats),
    }
    metadata = {
        'clip_len': None if pool_clips else float(clip_len),
        'pool_clips': int(pool_clips), 'normalize_video': bool(normalize_video),
        'text_key': text_key, 'video_dims_per_dir': video_reader.dims,
        'sources': {'train': os.path.abspath(train),
                    'val': os.path.abspath(val) if val else None,
                    'test': os.path.abspath(test),
                    'video_features': [os.path.abspath(d) for d in video_dirs],
                    'text_features': os.path.abspath(text_dir)},
        'val_from_train': val is None, 'val_fraction': val_fraction if val is None
        else None, 'seed': seed, 'window_tolerance_s': tolerance,
        'on_bad_window': on_bad_window, 'summary': summary,
        # What extracted the features (Predictor.predict_video checks its backbones).
        'backbones': {'video': [records.read_record(d) for d in video_dirs],
                      'text': records.read_record(text_dir)},
    }
    writer.commit(metadata)
  log(f'Wrote {output}')
  for s in ('train', 'val', 'test'):
    log(f'  {s:5s}: {summary["counts"][s]} queries, {summary["videos"][s]} videos')
  for k, v in summary['length_stats'].items():
    log(f'  {k}: {v}')
  log(f'  video dim {writer.video_dim} (per dir {video_reader.dims}), text dim '
      f'{writer.text_dim}, clip_len {metadata["clip_len"]}')
  if stats:
    log(f'  window/row checks: {dict(stats)}')
  return summary
