"""The build's first pass: every row checked without reading features, in flat memory.

Per annotation file it streams the rows once (`sources.validate_row`) and keeps three
int64 per kept row (qid key, line, content key) plus the vid counts, so a corpus of
millions of queries is checked in tens of MB. Then, over those arrays:
  * a qid repeated inside a file is an error (`sources.repeated_qid_error`);
  * a qid in two splits is an error naming both places (test leakage);
  * rows identical but for the qid are counted per split and noted (kept as in the
    source; public releases have some, e.g. TACoS).
Keys of non-int qids and row contents are 64-bit hashes; the rows named in messages
are re-read from the file, and a qid clash is confirmed on the real qids.
"""
import array
import collections
import hashlib
import os
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np

from momentdiff_jax.data import sources
from momentdiff_jax.data.sources import DataError


def _hash(text: str) -> int:
  return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), 'little',
                        signed=True)


def qid_key(qid) -> int:
  """int64 key of a qid: ints as themselves, others hashed."""
  if isinstance(qid, int) and -2 ** 63 <= qid < 2 ** 63:
    return qid
  return _hash(repr(qid))


def iter_rows(path: str, max_rows: int = 0) -> Iterator[dict]:
  """The rows of a jsonl file (the first `max_rows` when > 0)."""
  for k, row in enumerate(sources.iter_jsonl(path)):
    if max_rows > 0 and k >= max_rows:
      return
    yield row


def rows_at(path: str, max_rows: int, lines) -> Dict[int, dict]:
  """{line: row} for a few lines of a file (rows named in messages)."""
  lines = set(int(l) for l in lines)
  return {r['_line']: r for r in iter_rows(path, max_rows) if r['_line'] in lines}


class FileIndex:
  """What the first pass keeps of one file's kept rows (arrays, row order)."""

  def __init__(self, path: str, split: str):
    self.path, self.split = path, split
    self.vid_queries = collections.Counter()   # insertion order = vid ids
    self._vid_id = {}
    self._q, self._l, self._c = array.array('q'), array.array('q'), array.array('q')
    self._v = array.array('q')

  def add(self, row: dict):
    self._q.append(qid_key(row['qid']))
    self._l.append(row['_line'])
    self._c.append(_hash(sources.row_content(row, 'qid')))
    self._v.append(self._vid_id.setdefault(row['vid'], len(self._vid_id)))
    self.vid_queries[row['vid']] += 1

  def arrays(self):
    as_np = lambda a: np.frombuffer(a, np.int64) if len(a) else np.zeros(0, np.int64)
    return as_np(self._q), as_np(self._l), as_np(self._c)

  def vid_ids(self) -> np.ndarray:
    """(rows,) index of each row's vid in `vids()`."""
    return np.frombuffer(self._v, np.int64) if len(self._v) else np.zeros(0, np.int64)

  def vids(self) -> List[str]:
    return list(self._vid_id)


def check_file(path: str, split: str, max_rows: int, check_kw: dict, text_dir: str,
               stats: dict) -> FileIndex:
  """Validates every row of `path`, checks its text feature files exist and that no
  qid repeats; returns the file's index."""
  index = FileIndex(path, split)
  missing_q, n_missing = [], 0
  for r in iter_rows(path, max_rows):
    if not sources.validate_row(r, path, stats=stats, **check_kw):
      continue
    index.add(r)
    if not os.path.exists(os.path.join(text_dir, f'qid{r["qid"]}.npz')):
      n_missing += 1
      if len(missing_q) < 10:
        missing_q.append(f'qid {r["qid"]} ({path}:{r["_line"]})')
  qkeys, lines, _ = index.arrays()
  _, inverse, counts = np.unique(qkeys, return_inverse=True, return_counts=True)
  if (counts > 1).any():
    dup_lines = lines[counts[inverse] > 1]
    seen = {}
    for line, r in sorted(rows_at(path, max_rows, dup_lines).items()):
      marker = (type(r['qid']).__name__, repr(r['qid']))
      if marker in seen:
        raise sources.repeated_qid_error(path, r, seen[marker])
      seen[marker] = r
  if n_missing:
    raise DataError(f'missing text feature files {text_dir}/qid<qid>.npz for '
                    f'{n_missing} queries: {"; ".join(missing_q)}')
  return index


def check_splits_disjoint(indexes: List[FileIndex], max_rows: int,
                          split_of: Callable[[FileIndex, dict], str]) -> None:
  """Raises DataError when a qid appears in two files (test leakage), naming the
  qid and both places. `split_of(index, row)`
  is the split a row lands in (train or val for the training file without --val)."""
  keys = [ix.arrays()[0] for ix in indexes]
  file_of = np.concatenate([np.full(len(k), f) for f, k in enumerate(keys)])
  row_of = np.concatenate([np.arange(len(k)) for k in keys])
  allk = np.concatenate(keys)
  _, first, inverse = np.unique(allk, return_index=True, return_inverse=True)
  clash = np.flatnonzero(file_of[first[inverse]] != file_of)
  if not len(clash):
    return
  places = []
  for i in clash:
    pairs = []
    for j in (first[inverse[i]], i):
      ix = indexes[file_of[j]]
      line = int(ix.arrays()[1][row_of[j]])
      row = rows_at(ix.path, max_rows, [line])[line]
      pairs.append((row['qid'], split_of(ix, row), ix.path, line))
    if pairs[0][0] == pairs[1][0] and type(pairs[0][0]) is type(pairs[1][0]):
      places.append(pairs)
    if len(places) == 5:
      break
  if not places:    # only hash collisions of different qids
    return
  head = '; '.join(f'qid {a[0]!r} in {a[1]} ({a[2]}:{a[3]}) and {b[1]} ({b[2]}:{b[3]})'
                   for a, b in places)
  more = f' ... and {len(clash) - 5} more' if len(clash) > 5 else ''
  raise DataError(f'{len(clash)} queries appear in two splits, which leaks evaluation '
                  f'queries into training: {head}{more}. Give every query one split '
                  '(and one qid).')


def note_duplicate_rows(index: FileIndex, max_rows: int,
                        split_of: Callable[[FileIndex, dict], str], stats: dict,
                        log: Callable[[str], None]) -> None:
  """Counts rows identical to an earlier row of their split but for the qid (same
  vid, query, duration, windows: same split), into stats['<split>_duplicate_rows'],
  and logs the first five per split (only those are re-read from the file)."""
  _, lines, content = index.arrays()
  _, first, inverse = np.unique(content, return_index=True, return_inverse=True)
  dup = np.flatnonzero(first[inverse] != np.arange(len(content)))
  if not len(dup):
    return
  earlier = first[inverse[dup]]
  vid_split = np.asarray([split_of(index, {'vid': v}) for v in index.vids()])
  dup_split = vid_split[index.vid_ids()[dup]]
  for split in dict.fromkeys(dup_split.tolist()):   # splits in order of first dup
    mine = np.flatnonzero(dup_split == split)
    head = mine[:5]
    rows = rows_at(index.path, max_rows, np.concatenate([lines[dup[head]],
                                                         lines[earlier[head]]]))
    stats[f'{split}_duplicate_rows'] = len(mine)
    log(f'Note: {len(mine)} {split} rows repeat an earlier row but for the qid (same '
        'vid, query, duration, windows); kept as in the source. First: ' +
        ', '.join(f'qid {rows[int(lines[dup[k]])]["qid"]} = qid '
                  f'{rows[int(lines[earlier[k]])]["qid"]} ({index.path}:'
                  f'{int(lines[dup[k]])})' for k in head))
