"""The build's first pass: every row checked without reading features, in flat memory.

Per annotation file it streams the rows once (`sources.validate_row`) and appends
each kept row's (file, line, qid key, content key, vid id) to an on-disk SQLite table
(`RowDB`, a temp file next to the output, a 2 MiB page cache, sorts spilled to
disk), so the build's peak RSS does not grow with the number of queries; RAM holds
per-video state only (each vid's query count). Then, by indexed queries:
  * a qid repeated inside a file is an error (`sources.repeated_qid_error`);
  * a qid in two splits is an error naming both places (test leakage);
  * rows identical but for the qid are counted per split and noted (kept as in the
    source; public releases have some, e.g. TACoS).
Keys of non-int qids and row contents are 64-bit hashes; the rows named in messages
are re-read from the file, and a qid clash is confirmed on the real qids.
"""
import collections
import hashlib
import os
import shutil
import sqlite3
import tempfile
from typing import Callable, Dict, Iterator, List

from momentdiff_jax.common.errors import DataError
from momentdiff_jax.data import sources


def _hash(text: str) -> int:
  return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), 'little',
                        signed=True)


def qid_key(qid) -> int:
  """int64 key of a qid: ints as themselves, others hashed."""
  if isinstance(qid, int) and -2 ** 63 <= qid < 2 ** 63:
    return qid
  return _hash(repr(qid))


def _marker(qid):
  """What makes two qids the same qid (1 and 1.0 and '1' are three)."""
  return type(qid).__name__, repr(qid)


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


class RowDB:
  """On-disk table of the kept rows of every file: (file, line, qkey, content, vid).

  A context manager: the SQLite file lives in a temp dir created next to `near`
  (the build's output) and removed on exit. Rows are buffered a few thousand at a
  time; queries stream from cursors, so memory is bounded whatever the row count.
  """
  _BATCH = 4096

  def __init__(self, near: str):
    parent = os.path.dirname(os.path.abspath(near)) or '.'
    os.makedirs(parent, exist_ok=True)
    self.tmp = tempfile.mkdtemp(prefix='.tmp-check-' + os.path.basename(near), dir=parent)
    self.db = sqlite3.connect(os.path.join(self.tmp, 'rows.sqlite'))
    for pragma in ('cache_size=-2048', 'temp_store=FILE', 'journal_mode=OFF',
                   'synchronous=OFF'):
      self.db.execute(f'PRAGMA {pragma}')
    self.db.execute('CREATE TABLE rows (file INTEGER, line INTEGER, qkey INTEGER, '
                    'content INTEGER, vid INTEGER)')
    # Maintained while rows are added: repeated qids are looked up per file before
    # the next file is read (its errors come first, as rows are read in order).
    self.db.execute('CREATE INDEX rows_qkey ON rows (qkey, file, line)')
    self.db.execute('CREATE INDEX rows_content ON rows (file, content, line)')
    self._buf = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  def close(self):
    self.db.close()
    shutil.rmtree(self.tmp, ignore_errors=True)

  def add(self, *values):
    self._buf.append(values)
    if len(self._buf) >= self._BATCH:
      self.flush()

  def flush(self):
    if self._buf:
      self.db.executemany('INSERT INTO rows VALUES (?, ?, ?, ?, ?)', self._buf)
      self._buf = []

  def query(self, sql: str, *args):
    """A cursor over `sql` (rows stream; call after adding)."""
    self.flush()
    return self.db.execute(sql, args)


class FileIndex:
  """What the first pass keeps of one file: its rows in `db` (as file `number`),
  its vids (insertion order = vid ids) and their query counts."""

  def __init__(self, path: str, split: str, db: RowDB, number: int):
    self.path, self.split, self.db, self.number = path, split, db, number
    self.vid_queries = collections.Counter()   # insertion order = vid ids
    self._vid_id = {}

  def add(self, row: dict):
    self.db.add(self.number, row['_line'], qid_key(row['qid']),
                _hash(sources.row_content(row, 'qid')),
                self._vid_id.setdefault(row['vid'], len(self._vid_id)))
    self.vid_queries[row['vid']] += 1

  def vids(self) -> List[str]:
    return list(self._vid_id)


def check_file(path: str, split: str, max_rows: int, check_kw: dict, text_dir: str,
               stats: dict, db: RowDB, number: int) -> FileIndex:
  """Validates every row of `path`, checks its text feature files exist and that no
  qid repeats; adds its rows to `db` as file `number` and returns the file's index."""
  index = FileIndex(path, split, db, number)
  missing_q, n_missing = [], 0
  for r in iter_rows(path, max_rows):
    if not sources.validate_row(r, path, stats=stats, **check_kw):
      continue
    index.add(r)
    if not os.path.exists(os.path.join(text_dir, f'qid{r["qid"]}.npz')):
      n_missing += 1
      if len(missing_q) < 10:
        missing_q.append(f'qid {r["qid"]} ({path}:{r["_line"]})')
  # Rows (in line order) whose qid key occurs on an earlier line of the file, with
  # those earlier lines; the first one whose real qid matches is the error.
  repeats = db.query(
      'SELECT b.line, (SELECT group_concat(a.line) FROM rows a WHERE a.qkey = b.qkey '
      'AND a.file = b.file AND a.line < b.line) AS earlier FROM rows b '
      'WHERE b.file = ? AND earlier IS NOT NULL ORDER BY b.line', number)
  for line, earlier in repeats:
    earlier = [int(l) for l in earlier.split(',')]
    rows = rows_at(path, max_rows, earlier + [line])
    r = rows[line]
    for l in sorted(earlier):
      if _marker(rows[l]['qid']) == _marker(r['qid']):
        raise sources.repeated_qid_error(path, r, rows[l])
  if n_missing:
    raise DataError(f'missing text feature files {text_dir}/qid<qid>.npz for '
                    f'{n_missing} queries: {"; ".join(missing_q)}')
  return index


def check_splits_disjoint(indexes: List[FileIndex], max_rows: int,
                          split_of: Callable[[FileIndex, dict], str]) -> None:
  """Raises DataError when a qid appears in two files (test leakage), naming the
  qid and both places. `split_of(index, row)`
  is the split a row lands in (train or val for the training file without --val)."""
  if not indexes:
    return
  db = indexes[0].db
  by_number = {ix.number: ix for ix in indexes}
  # A row clashes when its qid key occurs in an earlier file; its pair is the
  # key's first occurrence (earliest file, then line).
  clash = ('FROM rows b WHERE EXISTS (SELECT 1 FROM rows a WHERE a.qkey = b.qkey '
           'AND a.file < b.file)')
  n_clash = db.query(f'SELECT COUNT(*) {clash}').fetchone()[0]
  if not n_clash:
    return
  places = []
  for file, line, first_file, first_line in db.query(
      'SELECT b.file, b.line, f.file, f.line FROM rows b JOIN rows f ON f.rowid = '
      '(SELECT a.rowid FROM rows a WHERE a.qkey = b.qkey ORDER BY a.file, a.line '
      'LIMIT 1) WHERE f.file < b.file ORDER BY b.file, b.line'):
    pairs = []
    for f, l in ((first_file, first_line), (file, line)):
      ix = by_number[f]
      row = rows_at(ix.path, max_rows, [l])[l]
      pairs.append((row['qid'], split_of(ix, row), ix.path, l))
    if _marker(pairs[0][0]) == _marker(pairs[1][0]):
      places.append(pairs)
    if len(places) == 5:
      break
  if not places:    # only hash collisions of different qids
    return
  head = '; '.join(f'qid {a[0]!r} in {a[1]} ({a[2]}:{a[3]}) and {b[1]} ({b[2]}:{b[3]})'
                   for a, b in places)
  more = f' ... and {n_clash - 5} more' if n_clash > 5 else ''
  raise DataError(f'{n_clash} queries appear in two splits, which leaks evaluation '
                  f'queries into training: {head}{more}. Give every query one split '
                  '(and one qid).')


def note_duplicate_rows(index: FileIndex, max_rows: int,
                        split_of: Callable[[FileIndex, dict], str], stats: dict,
                        log: Callable[[str], None]) -> None:
  """Counts rows identical to an earlier row of their split but for the qid (same
  vid, query, duration, windows: same split), into stats['<split>_duplicate_rows'],
  and logs the first five per split (only those are re-read from the file)."""
  vid_split = [split_of(index, {'vid': v}) for v in index.vids()]
  counts, heads = collections.Counter(), {}    # splits in order of first duplicate
  for line, vid, earlier in index.db.query(
      'SELECT b.line, b.vid, (SELECT MIN(a.line) FROM rows a WHERE a.file = b.file '
      'AND a.content = b.content) AS first FROM rows b WHERE b.file = ? '
      'AND first < b.line ORDER BY b.line', index.number):
    split = vid_split[vid]
    counts[split] += 1
    head = heads.setdefault(split, [])
    if len(head) < 5:
      head.append((line, earlier))
  for split, head in heads.items():
    rows = rows_at(index.path, max_rows, [l for pair in head for l in pair])
    stats[f'{split}_duplicate_rows'] = counts[split]
    log(f'Note: {counts[split]} {split} rows repeat an earlier row but for the qid (same '
        'vid, query, duration, windows); kept as in the source. First: ' +
        ', '.join(f'qid {rows[l]["qid"]} = qid {rows[e]["qid"]} ({index.path}:{l})'
                  for l, e in head))
