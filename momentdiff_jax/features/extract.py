"""Feature files in the Moment-DETR layout from video files (and query texts).

The logic behind `data_prep/extract_features.py`:
  FEATS/clip_features/<vid>.npz, FEATS/slowfast_features/<vid>.npz   key `features` (L, D)
  FEATS/clip_text_features/qid<qid>.npz                              key `last_hidden_state`
  FEATS/<dir>/extraction.json                                         the backbone record
Videos are decoded by a pool of threads (PyAV decodes outside the GIL); their clips are
pooled into fixed-size batches across videos and encoded data-parallel over the local
devices. Every file is written to a temp name and renamed, so a killed run leaves only
whole files, and a rerun skips the videos whose files all exist. A video that cannot
be decoded is listed at the end and does not stop the others. Several processes each
extract a share of the videos (`shards.py`).
"""
import collections
import concurrent.futures
import glob
import os
import queue
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from momentdiff_jax.common import atomic
from momentdiff_jax.common import records
from momentdiff_jax.common.errors import DataError
from momentdiff_jax.common.jsonl import read_jsonl
from momentdiff_jax.features import backbones as bb
from momentdiff_jax.features import video

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.m4v', '.mpg', '.mpeg',
                    '.flv', '.wmv', '.3gp', '.ts')


def list_videos(spec: str) -> List[Tuple[str, str]]:
  """`DIR` (its video files, not recursive) or a glob -> sorted [(vid, path)].

  The vid is the file name without its extension; two files with one vid are an error.
  """
  if os.path.isdir(spec):
    paths = [os.path.join(spec, f) for f in os.listdir(spec)
             if f.lower().endswith(VIDEO_EXTENSIONS)]
  else:
    paths = [p for p in glob.glob(spec) if os.path.isfile(p)]
  if not paths:
    raise FileNotFoundError(f'no video files match {spec!r} (a directory is searched for '
                            f'{", ".join(VIDEO_EXTENSIONS)})')
  by_vid = collections.defaultdict(list)
  for p in sorted(paths):
    by_vid[os.path.splitext(os.path.basename(p))[0]].append(p)
  dup = {v: ps for v, ps in by_vid.items() if len(ps) > 1}
  if dup:
    raise ValueError(f'several files give one video id: {dict(list(dup.items())[:5])}')
  return [(v, ps[0]) for v, ps in sorted(by_vid.items())]


def atomic_savez(path: str, **arrays) -> None:
  """np.savez to a temp file in the same dir, then rename: never a half-written file."""
  with atomic.atomic_open(path, 'wb') as f:
    np.savez(f, **arrays)


def _decode_worker(enc: bb.Encoders, vid: str, path: str, clip_len: float,
                   out: queue.Queue, chunk: int) -> None:
  try:
    samplers = enc.samplers(path, clip_len)
    counts = [0] * len(samplers)
    for i, arr in video.sample_clips(path, samplers, chunk):
      counts[i] += len(arr)
      out.put(('clips', vid, i, arr))
    empty = [enc.names[i] for i, c in enumerate(counts) if c == 0]
    if empty:
      raise video.VideoError(f'{path}: no {"/".join(empty)} clip (video shorter than '
                             f'half a {clip_len} s clip, or no decodable frame)')
    out.put(('done', vid, None, None))
  except Exception as e:  # pylint: disable=broad-except
    out.put(('error', vid, None, str(e) if isinstance(e, video.VideoError)
             else f'{type(e).__name__}: {e}'))


class _Pending:
  """Clips of one backbone waiting for a full batch, with their (vid, order) owners."""

  def __init__(self):
    self.parts: List[Tuple[str, int, np.ndarray]] = []
    self.count = 0

  def add(self, vid, order, arr):
    self.parts.append((vid, order, arr))
    self.count += len(arr)

  def take_all(self):
    parts, self.parts, self.count = self.parts, [], 0
    return parts


class _Scheduler:
  """One `extract_videos` run: decoded clip chunks -> full encoder batches -> one
  feature file per video.

  A few videos decode at a time (`num_workers` threads, one more queued so no thread
  idles); their chunks arrive on one queue in any interleaving, so each chunk keeps its
  (vid, backbone, order) to be put back in place. A video's files are written once it
  is decoded and none of its chunks waits for a batch.
  """

  def __init__(self, enc: bb.Encoders, todo: Sequence[Tuple[str, str]], clip_len: float,
               num_workers: int, chunk: int, out_path: Callable[[str, str], str], bar):
    self.enc, self.clip_len, self.chunk, self.out_path, self.bar = (
        enc, clip_len, chunk, out_path, bar)
    self.workers = max(1, num_workers)
    self.q: queue.Queue = queue.Queue(maxsize=4 * self.workers * len(enc.names))
    self.paths = dict(todo)
    self.remaining = collections.deque(todo)
    self.in_flight = set()
    # vid -> backbone -> order -> (n, D)
    self.feats: Dict[str, Dict[int, Dict[int, np.ndarray]]] = {}
    self.order = {}                                  # (vid, backbone) -> next order
    self.waiting = collections.Counter()             # vid -> clip chunks not encoded
    self.done, self.failed, self.written = set(), [], 0
    self.pending = [_Pending() for _ in enc.names]
    self.n_clips = collections.Counter()
    self.pool = None

  def run(self) -> None:
    """Decodes, encodes and writes every video of `todo`; failures go to `failed`."""
    self.pool = concurrent.futures.ThreadPoolExecutor(self.workers)
    try:
      self.submit()
      while self.in_flight or self.done:
        if not self.in_flight:          # only encodes left: flush partial batches
          for i in range(len(self.enc.names)):
            self.run_batch(i)
        else:
          self.receive(*self.q.get())
        self.finish_ready()
    finally:
      self.pool.shutdown(wait=True, cancel_futures=True)
      if self.bar is not None:
        self.bar.close()

  def submit(self) -> None:
    while self.remaining and len(self.in_flight) < self.workers + 1:
      vid, path = self.remaining.popleft()
      self.in_flight.add(vid)
      self.feats[vid] = {i: {} for i in range(len(self.enc.names))}
      self.pool.submit(_decode_worker, self.enc, vid, path, self.clip_len, self.q,
                       self.chunk)

  def receive(self, kind: str, vid: str, i: Optional[int], payload) -> None:
    """One message of `_decode_worker`: ('clips', vid, backbone, (n, ...) clips),
    ('done', vid, None, None) or ('error', vid, None, reason)."""
    if kind == 'clips':
      o = self.order.get((vid, i), 0)
      self.order[(vid, i)] = o + 1
      self.pending[i].add(vid, o, payload)
      self.waiting[vid] += 1
      if self.pending[i].count >= self.enc.batch(self.enc.names[i]):
        self.run_batch(i)
      return
    self.in_flight.discard(vid)
    if kind == 'done':
      self.done.add(vid)
    else:
      self.fail(vid, payload)
    self.submit()

  def fail(self, vid: str, reason: str) -> None:
    self.failed.append([self.paths[vid], reason])
    for p in self.pending:              # drop its clips still waiting
      p.parts = [x for x in p.parts if x[0] != vid]
      p.count = sum(len(x[2]) for x in p.parts)
    self.feats.pop(vid, None)
    self.waiting.pop(vid, None)
    if self.bar is not None:
      self.bar.update(1)

  def run_batch(self, i: int) -> None:
    """Encodes the waiting clips of backbone i (one batch, several videos)."""
    parts = self.pending[i].take_all()
    if not parts:
      return
    y = self.enc.encode(self.enc.names[i], np.concatenate([a for _, _, a in parts]))
    s = 0
    for vid, o, a in parts:
      if vid in self.feats:
        self.feats[vid][i][o] = y[s:s + len(a)]
      s += len(a)
      self.waiting[vid] -= 1
    self.n_clips[self.enc.names[i]] += s

  def finish_ready(self) -> None:
    """Writes the files of the decoded videos none of whose clips wait for a batch."""
    for vid in [v for v in self.done if self.waiting[v] == 0]:
      self.done.discard(vid)
      for i, n in enumerate(self.enc.names):
        parts = self.feats[vid][i]
        arr = np.concatenate([parts[o] for o in sorted(parts)]).astype(np.float32)
        atomic_savez(self.out_path(n, vid), features=arr)
      del self.feats[vid]
      self.written += 1
      if self.bar is not None:
        self.bar.update(1)


def _feature_dirs(output: str, enc: bb.Encoders, clip_len: float,
                  write_records: bool) -> Dict[str, str]:
  """{backbone: output/<its dir>}, each made, its record written or checked."""
  dirs = {n: os.path.join(output, bb.FEATURE_DIRS[n]) for n in enc.names}
  for n in enc.names:
    rec = dict(enc.records[n], clip_len=float(clip_len))
    if write_records:
      records.write_manifest(dirs[n], rec)
    else:
      records.check_manifest(dirs[n], rec)
      os.makedirs(dirs[n], exist_ok=True)
  return dirs


def _log_failed(failed: List[List[str]], log: Callable[[str], None]) -> None:
  if failed:
    log(f'{len(failed)} videos failed (no feature file written):')
    for p, why in failed:
      log(f'  {why}' if why.startswith(p) else f'  {p}: {why}')


def extract_videos(videos: Sequence[Tuple[str, str]], output: str, enc: bb.Encoders,
                   clip_len: float, num_workers: int = 2, chunk: int = 16,
                   overwrite: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print, write_records: bool = True) -> dict:
  """Writes `output/<backbone dir>/<vid>.npz` for every video; returns a summary dict
  {'written', 'skipped', 'failed': [[path, reason], ...], 'failed_vids', 'clips',
  'seconds'}. `write_records=False` (one shard of several): existing records are
  checked, none written (the finalizing step writes them)."""
  dirs = _feature_dirs(output, enc, clip_len, write_records)

  def out_path(n, vid):
    return os.path.join(dirs[n], f'{vid}.npz')

  todo = [(v, p) for v, p in videos
          if overwrite or not all(os.path.exists(out_path(n, v)) for n in enc.names)]
  skipped = len(videos) - len(todo)
  if skipped:
    log(f'{skipped} of {len(videos)} videos already have all their feature files: skipped')
  bar = None
  if progress and todo:
    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc='videos', unit='video')
  t0 = time.time()
  run = _Scheduler(enc, todo, clip_len, num_workers, chunk, out_path, bar)
  run.run()
  secs = time.time() - t0
  by_path = {p: v for v, p in videos}
  summary = {'written': run.written, 'skipped': skipped, 'failed': run.failed,
             'failed_vids': sorted(by_path[p] for p, _ in run.failed),
             'clips': dict(run.n_clips), 'seconds': round(secs, 2)}
  log(f'Wrote features of {run.written} videos to {output} in {secs:.1f} s '
      f'(clips: {dict(run.n_clips)})')
  _log_failed(run.failed, log)
  return summary


def read_queries(jsonl: str) -> list:
  """Rows of a queries jsonl (fields qid, query), checked."""
  rows = read_jsonl(jsonl)
  for r in rows:
    if 'qid' not in r or not isinstance(r.get('query'), str):
      raise DataError(f'{jsonl}:{r["_line"]}: need fields "qid" and "query" (a string)')
  return rows


def text_record(enc: bb.Encoders) -> dict:
  return dict(enc.records['clip'], feature_dim=enc.models['clip'].text_width,
              output='last_hidden_state')


def extract_queries(rows: Sequence[dict], output: str, enc: bb.Encoders,
                    batch_size: int = 64, overwrite: bool = False,
                    log: Callable[[str], None] = print, write_records: bool = True) -> int:
  """`output/clip_text_features/qid<qid>.npz` (key last_hidden_state) for every row
  (`read_queries`); returns the number written."""
  text_dir = os.path.join(output, bb.TEXT_DIR)
  if write_records:
    records.write_manifest(text_dir, text_record(enc))
  else:
    records.check_manifest(text_dir, text_record(enc))
    os.makedirs(text_dir, exist_ok=True)
  todo = [r for r in rows if overwrite or not os.path.exists(
      os.path.join(text_dir, f'qid{r["qid"]}.npz'))]
  for s in range(0, len(todo), 1024):   # bounded memory, files appear as they are done
    part = todo[s:s + 1024]
    for r, h in zip(part, enc.encode_queries([r['query'] for r in part], batch_size)):
      atomic_savez(os.path.join(text_dir, f'qid{r["qid"]}.npz'), last_hidden_state=h)
  log(f'Wrote {len(todo)} query feature files to {text_dir} '
      f'({len(rows) - len(todo)} existed)')
  return len(todo)


def video_features(path: str, enc: bb.Encoders, clip_len: float,
                   progress: Optional[Callable[[float], None]] = None,
                   duration: Optional[float] = None) -> Dict[str, np.ndarray]:
  """One video -> {backbone: (L, D) float32}, in memory (Predictor.predict_video).

  `progress(fraction)`: called after each encoded chunk with the share of `duration`
  (seconds) whose clips are encoded so far (first backbone), then with 1.0.
  """
  parts = {n: [] for n in enc.names}
  chunk = max(enc.batch(n) for n in enc.names)
  for i, arr in video.sample_clips(path, enc.samplers(path, clip_len), chunk):
    parts[enc.names[i]].append(enc.encode(enc.names[i], arr))
    if progress is not None and duration:
      done = sum(len(p) for p in parts[enc.names[0]]) * clip_len
      progress(min(1.0, done / duration))
  for n, p in parts.items():
    if not p:
      raise video.VideoError(f'{path}: no {n} clip (video shorter than half a '
                             f'{clip_len} s clip, or no decodable frame)')
  if progress is not None:
    progress(1.0)
  return {n: np.concatenate(p) for n, p in parts.items()}
