"""Real annotation rows for the accuracy benchmark (`benchmark_gen.py`).

The benchmark's videos take their durations and their queries' windows from the
Charades-STA, QVHighlights and TACoS annotation files (CC BY-NC-SA 4.0; see
`tables/LICENSE` and `tables/README.md`). A compact table of the rows it uses ships
with the package (`tables/benchmark_rows.jsonl.gz`: source, split, instance, duration,
windows; no query text), so a clone without `../shared` generates the same benchmark.
`select_rows(annotation_dir)` rebuilds that table from the full files, deterministically
(`tests/test_benchmark_gen.py` checks the two agree when the files are present).

An "instance" is one generated video: a real video with at most `max_events` distinct
events (distinct windows; queries with the same windows are paraphrases of one event).
TACoS videos carry ~130 queries each, so they are cut into several instances of
consecutive events, each a video of its own for the generator.
"""
import collections
import gzip
import json
import os
from typing import Optional

import numpy as np

from momentdiff_jax.common.errors import DataError

TABLE = os.path.join(os.path.dirname(__file__), 'tables', 'benchmark_rows.jsonl.gz')

# (source, our split) -> annotation file under the annotation dir; train and val come
# from the training file (disjoint videos), test from the dataset's held-out file.
FILES = {
    'charades': {'train': 'charades/charades_sta_train_tvr_format.jsonl',
                 'test': 'charades/charades_sta_test_tvr_format.jsonl'},
    'qvhighlights': {'train': 'highlight/highlight_train_release.jsonl',
                     'test': 'highlight/highlight_val_release.jsonl'},
    'tacos': {'train': 'tacos/train_tacos.jsonl', 'test': 'tacos/test_tacos.jsonl'},
}
# Queries per (source, split): half Charades-STA, a quarter each QVHighlights and TACoS.
COUNTS = {
    'charades': {'train': 1500, 'val': 150, 'test': 300},
    'qvhighlights': {'train': 750, 'val': 75, 'test': 150},
    'tacos': {'train': 750, 'val': 75, 'test': 150},
}
MAX_EVENTS = 6
SELECT_SEED = 19


def _read_jsonl(path: str) -> list:
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise DataError(f'{path}:{n}: not a JSON line ({e})') from e
  return rows


def _instances(rows: list, source: str, max_events: int) -> list:
  """Rows grouped into instances: [[row, ...], ...] in file order of their videos."""
  by_vid = collections.OrderedDict()
  for r in rows:
    wins = r.get('relevant_windows')
    if not wins:
      continue
    by_vid.setdefault(str(r['vid']), []).append(r)
  out = []
  for vid, vrows in by_vid.items():
    events = collections.OrderedDict()
    for r in vrows:
      key = json.dumps([[round(float(a), 3), round(float(b), 3)] for a, b in
                        r['relevant_windows']])
      events.setdefault(key, []).append(r)
    keys = list(events)
    for c in range(0, len(keys), max_events):
      inst = f'{source}:{vid}' + (f'#{c // max_events}' if len(keys) > max_events else '')
      out.append([dict(src=source, inst=inst, vid=vid, duration=float(r['duration']),
                       windows=[[float(a), float(b)] for a, b in r['relevant_windows']],
                       qid=r['qid'])
                  for k in keys[c:c + max_events] for r in events[k]])
  return out


def _take(instances: list, rng, want: int) -> tuple:
  """Instances in a random order until `want` queries; returns (taken, rest)."""
  order = rng.permutation(len(instances))
  taken, n, cut = [], 0, len(order)
  for i, j in enumerate(order):
    if n >= want:
      cut = i
      break
    taken.append(instances[j])
    n += len(instances[j])
  return taken, [instances[j] for j in order[cut:]]


def select_rows(annotation_dir: str, counts: Optional[dict] = None,
                max_events: int = MAX_EVENTS, seed: int = SELECT_SEED) -> list:
  """The benchmark's rows chosen from the full annotation files: a list of dicts
  {src, split, inst, vid, duration, windows, qid}, ordered by source then split."""
  counts = counts or COUNTS
  out = []
  for si, (source, files) in enumerate(FILES.items()):
    rng = np.random.default_rng([seed, si])
    want = counts[source]
    train = _instances(_read_jsonl(os.path.join(annotation_dir, files['train'])), source,
                       max_events)
    test = _instances(_read_jsonl(os.path.join(annotation_dir, files['test'])), source,
                      max_events)
    picked = {}
    picked['train'], rest = _take(train, rng, want['train'])
    picked['val'], _ = _take(rest, rng, want['val'])
    picked['test'], _ = _take(test, rng, want['test'])
    for split in ('train', 'val', 'test'):
      for inst in picked[split]:
        out.extend(dict(r, split=split) for r in inst)
  return out


def write_table(rows: list, path: str = TABLE) -> str:
  """Writes rows as gzipped JSON lines (mtime 0: the same rows give the same bytes)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as raw:
    with gzip.GzipFile(fileobj=raw, mode='wb', mtime=0, filename='') as f:
      for r in rows:
        f.write((json.dumps(r, sort_keys=True) + '\n').encode())
  return path


def load_rows(annotation_dir: Optional[str] = None) -> list:
  """The benchmark rows: from the full files under `annotation_dir` when given, else
  the shipped table."""
  if annotation_dir:
    return select_rows(annotation_dir)
  if not os.path.exists(TABLE):
    raise DataError(f'{TABLE} is missing: reinstall the package or pass the directory of '
                    'the annotation files')
  with gzip.open(TABLE, 'rt') as f:
    return [json.loads(l) for l in f if l.strip()]


def group_instances(rows: list) -> dict:
  """{split: [(inst, [rows])]} in table order."""
  out = {'train': collections.OrderedDict(), 'val': collections.OrderedDict(),
         'test': collections.OrderedDict()}
  for r in rows:
    out[r['split']].setdefault(r['inst'], []).append(r)
  return {s: list(d.items()) for s, d in out.items()}


if __name__ == '__main__':   # rebuild the shipped table from the full files
  import sys
  src = sys.argv[1] if len(sys.argv) > 1 else '../shared/data/annotations'
  sel = select_rows(src)
  print(write_table(sel), len(sel), 'rows')
