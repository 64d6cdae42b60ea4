"""Training and evaluation iteration: bucketed static shapes, global determinism.

Global batch identity across process/device counts: every process computes the same
epoch plan (a list of global batches, each a bucket length and `batch_size` example
indices) from (seed, epoch) alone, and process p loads the contiguous slice
[p * local, (p + 1) * local) of every global batch. Concatenating the processes'
local batches in process order therefore gives the same global batch whatever the
process count, and all processes use the same bucket at every step.

Planning (`epoch_plan`): examples are shuffled with rng(seed, epoch); each goes to
the smallest bucket >= its kept clip count; buckets are cut into full global
batches from the smallest up, leftovers of a bucket join the next larger one
(padded more), and the final remainder (< batch_size examples, different ones each
epoch) is dropped; then the batch order is shuffled. So steps per epoch are
floor(n / batch_size) and batch shapes come from `length_buckets` only.

Training examples whose every GT window starts after the `max_v_l` cut have no
target left and are skipped (`TrainIterator.num_skipped`).

State: `{'epoch', 'step_in_epoch'}` (+ seed and batch size, checked on restore):
a restored iterator yields exactly the batches the uninterrupted one would, since
per-example sampling uses rng(seed, epoch, index).

Reading goes through the video-keyed store (`store.SplitReader`, memory maps): a
batch is planned per example (`examples.plan_batch`, in grain worker processes when
`data.worker_count` > 0) and its features gathered in one copy
(`examples.gather_features`, in this process); docs/DESIGN.md, "Dataset store".
"""
import ctypes
import itertools
import sys
import threading
import types
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from momentdiff_jax.common import config_base
from momentdiff_jax.data import examples as ex_lib
from momentdiff_jax.data import store

_PLAN_TAG = 7919   # separates the plan's rng stream from per-example streams


def reuse_batch_memory() -> None:
  """Lets glibc reuse freed batch-sized blocks instead of mapping fresh pages.

  glibc maps blocks above a threshold (at most 32 MB by default) straight from the
  OS and unmaps them on free, so every batch larger than that (TACoS: 32 x 100
  clips x 4098 x 4 B = 52 MB) is written into new pages; on a VM the page faults cost
  ~64 ms per 52 MB here, ~2 ms per example. Raising the thresholds keeps such blocks
  in the heap for the next batch (process RSS stays at its high-water mark).
  """
  global _MALLOC_TUNED
  if _MALLOC_TUNED or not sys.platform.startswith('linux'):
    return
  _MALLOC_TUNED = True
  try:
    libc = ctypes.CDLL('libc.so.6')
    libc.mallopt(-3, 1 << 29)   # M_MMAP_THRESHOLD: 512 MB
    libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: 1 GB
  except (OSError, AttributeError):   # not glibc: nothing to tune
    pass


_MALLOC_TUNED = False


def resolve_data_dir(config) -> str:
  """`config.data.dir`, or the built-in synthetic dataset (generated on first use)."""
  if config.data.dir:
    return config.data.dir
  if config.data.name == 'synthetic':
    from momentdiff_jax.data import synthetic
    return synthetic.ensure_synthetic()
  if config.data.name.startswith('mdbench_'):   # the accuracy benchmark's data
    from momentdiff_jax.data import benchmark_gen
    return benchmark_gen.ensure_benchmark(config.data.name.split('_', 1)[1])
  raise ValueError('config.data.dir is empty; build a dataset with '
                   'data_prep/build_dataset.py or use data.name=synthetic')


def bucket_of(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  """Index of the smallest bucket >= each length; raises if one does not fit."""
  buckets = np.asarray(sorted(buckets))
  if len(lengths) and lengths.max() > buckets[-1]:
    raise ValueError(f'a video has {lengths.max()} clips (after the max_v_l cap) '
                     f'but the largest length bucket is {buckets[-1]}: set '
                     'data.length_buckets[-1] >= data.max_v_l')
  return np.searchsorted(buckets, lengths, side='left')


def epoch_plan(bucket_ids: np.ndarray, eligible: np.ndarray, batch_size: int,
               seed: int, epoch: int, num_buckets: int) -> List[Tuple[int, np.ndarray]]:
  """List of (bucket id, (batch_size,) example indices) for one epoch."""
  rng = np.random.default_rng([int(seed), _PLAN_TAG, int(epoch)])
  perm = eligible[rng.permutation(len(eligible))]
  batches, carry = [], np.zeros((0,), np.int64)
  for b in range(num_buckets):
    members = np.concatenate([carry, perm[bucket_ids[perm] == b]])
    n_full = len(members) // batch_size
    for k in range(n_full):
      batches.append((b, members[k * batch_size:(k + 1) * batch_size]))
    carry = members[n_full * batch_size:]
  return [batches[i] for i in rng.permutation(len(batches))]


class _Loader:
  """Reads and collates examples of one split (host-side numpy) through the store.

  Holds only per-query planning arrays and a `store.SplitReader` (memory-mapped,
  reopened after pickling), so grain worker processes can receive it.
  """

  def __init__(self, config, data_dir: str, split: str):
    # A plain namespace: ConfigDict attribute reads cost ~3 us each, per example.
    self.cfg = types.SimpleNamespace(**config.data.to_dict())
    self.seed = config_base.data_seed(config)
    self.reader = store.SplitReader(data_dir, split)
    rec = self.reader.records
    num_clips = rec['num_clips'].astype(np.int64)
    self.kept = ex_lib.kept_clips(num_clips, self.cfg.max_v_l)
    self.buckets = sorted(self.cfg.length_buckets)
    self.bucket_ids = bucket_of(self.kept, self.buckets)
    clip_len = rec['time_scale'].astype(np.float64) / np.maximum(num_clips, 1)
    min_start = rec['min_start'].astype(np.float64)
    # Labelled examples with some window inside the kept clips.
    self.has_target = (min_start >= 0) & (min_start < self.kept * clip_len)

  def plan(self, indices: Sequence[int], bucket: int, epoch: int, train: bool,
           example_mask=None, out_indices=None) -> Dict[str, np.ndarray]:
    """A batch without its features (`examples.plan_batch`): small, cheap to pass
    between processes."""
    rngs = [ex_lib.example_rng(self.seed, epoch, i, train) for i in indices]
    return ex_lib.plan_batch(self.reader, indices, self.buckets[bucket], self.cfg, rngs,
                             train, example_mask, out_indices)

  def gather(self, part: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return ex_lib.gather_features(self.reader, part, self.cfg)

  def load(self, indices: Sequence[int], bucket: int, epoch: int, train: bool,
           example_mask=None, out_indices=None) -> Dict[str, np.ndarray]:
    return self.gather(self.plan(indices, bucket, epoch, train, example_mask,
                                 out_indices))


class _StepLoader:
  """global step -> this process's local batch: a pure function of (seed, step).

  `self(step)` is the per-example work without the features (`_Loader.plan`),
  `self.gather(part)` the feature copy. Picklable (grain worker processes get a
  copy, without the memory maps); each copy caches epoch plans.
  """

  def __init__(self, loader: _Loader, eligible: np.ndarray, global_batch: int,
               local_batch: int, process_index: int, steps_per_epoch: int):
    self.loader, self.eligible = loader, eligible
    self.global_batch, self.local_batch = global_batch, local_batch
    self.process_index, self.steps_per_epoch = process_index, steps_per_epoch
    self._plans, self._lock = {}, threading.Lock()

  def __getstate__(self):
    return dict(self.__dict__, _plans={}, _lock=None)

  def __setstate__(self, state):
    self.__dict__.update(state, _lock=threading.Lock())

  def plan(self, epoch: int) -> List[Tuple[int, np.ndarray]]:
    with self._lock:   # prefetch threads may cross an epoch end together
      if epoch not in self._plans:
        self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}
        self._plans[epoch] = epoch_plan(
            self.loader.bucket_ids, self.eligible, self.global_batch,
            self.loader.seed, epoch, len(self.loader.buckets))
      return self._plans[epoch]

  def __call__(self, step: int) -> Dict[str, np.ndarray]:
    epoch, k = divmod(int(step), self.steps_per_epoch)
    bucket, idx = self.plan(epoch)[k]
    lo = self.process_index * self.local_batch
    return self.loader.plan(idx[lo:lo + self.local_batch], bucket, epoch, True)

  def gather(self, part: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return self.loader.gather(part)

  def load(self, step: int) -> Dict[str, np.ndarray]:
    return self.gather(self(step))


class TrainIterator:
  """Endless iterator of this process's local training batches.

  Args:
    config: the run config (uses data.seed (else seed), batch_size (global), data.*).
    data_dir: dataset dir; None resolves `config` (synthetic default).
    process_index, process_count: this host and the number of hosts.
    local_batch: examples per step on this host; default batch_size / process_count.
    prefetch: batches read ahead (default `data.prefetch`): by that many threads when
      `data.worker_count` is 0, else per grain worker process.
    worker_count: grain worker processes (default `data.worker_count`); worker w
      makes the batches of steps w, w + W, ... and grain returns them in step order,
      so the batches are the same for any worker count.
  """

  def __init__(self, config, data_dir: Optional[str] = None, process_index: int = 0,
               process_count: int = 1, local_batch: Optional[int] = None,
               split: str = 'train', prefetch: Optional[int] = None,
               worker_count: Optional[int] = None):
    data_dir = data_dir or resolve_data_dir(config)
    self.global_batch = int(config.batch_size)
    if self.global_batch % process_count:
      raise ValueError(f'batch_size {self.global_batch} is not divisible by '
                       f'process_count {process_count}')
    self.local_batch = local_batch or self.global_batch // process_count
    if self.local_batch * process_count != self.global_batch:
      raise ValueError(f'local_batch {self.local_batch} x process_count '
                       f'{process_count} != batch_size {self.global_batch}')
    self.process_index, self.process_count = process_index, process_count
    self.seed = config_base.data_seed(config)
    reuse_batch_memory()
    self._loader = _Loader(config, data_dir, split)
    eligible = np.flatnonzero(self._loader.has_target)
    self.num_examples = len(eligible)
    self.num_skipped = len(self._loader.kept) - self.num_examples
    self.steps_per_epoch = self.num_examples // self.global_batch
    if self.steps_per_epoch == 0:
      raise ValueError(f'{self.num_examples} training examples < batch_size '
                       f'{self.global_batch}')
    self.prefetch = (int(config.data.get('prefetch', 2)) if prefetch is None
                     else prefetch)
    self.worker_count = (int(config.data.get('worker_count', 0)) if worker_count is None
                         else worker_count)
    self._steps = _StepLoader(self._loader, eligible, self.global_batch,
                              self.local_batch, process_index, self.steps_per_epoch)
    self.epoch, self.step_in_epoch = 0, 0
    self._it = self._grain_it = None

  # -- state ---------------------------------------------------------------------
  def get_state(self) -> dict:
    """JSON-able position: the next `next()` returns this epoch/step's batch."""
    return {'epoch': self.epoch, 'step_in_epoch': self.step_in_epoch,
            'seed': self.seed, 'global_batch': self.global_batch}

  def set_state(self, state: dict) -> None:
    for k in ('seed', 'global_batch'):
      if k in state and state[k] != getattr(self, k):
        raise ValueError(f'iterator state has {k}={state[k]} but this run uses '
                         f'{getattr(self, k)}: the batches would differ')
    self.close()
    self.epoch, self.step_in_epoch = int(state['epoch']), int(state['step_in_epoch'])

  @property
  def step(self) -> int:
    """Global steps consumed so far."""
    return self.epoch * self.steps_per_epoch + self.step_in_epoch

  def plan(self, epoch: int) -> List[Tuple[int, np.ndarray]]:
    """The global batches of an epoch: list of (bucket id, (batch_size,) indices)."""
    return self._steps.plan(epoch)

  # -- iteration -------------------------------------------------------------------
  def _start(self):
    start = self.step
    if self.worker_count == 0 and self.prefetch == 0:
      self._it = map(self._steps.load, itertools.count(start))
      return
    import grain
    # Steps from here on; 2**40 stands for "forever" (grain slices it lazily).
    steps = grain.MapDataset.range(start, start + 2 ** 40)
    if self.worker_count == 0:
      ds = steps.map(self._steps.load).to_iter_dataset(grain.ReadOptions(
          num_threads=self.prefetch, prefetch_buffer_size=self.prefetch))
    else:
      from absl import flags
      if not flags.FLAGS.is_parsed():   # grain reads its absl flags (defaults do)
        flags.FLAGS.mark_as_parsed()
      # Workers do the per-example Python work (no read threads: it holds the GIL)
      # and pass the small result through grain's queue (not shared memory); this
      # process copies the features once, straight from the store into the batch,
      # in a prefetch thread (numpy releases the GIL while copying).
      ds = steps.map(self._steps).to_iter_dataset(
          grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
      ds = grain.experimental.WithOptionsIterDataset(
          ds, grain.experimental.DatasetOptions(min_shm_size=1 << 30))
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.worker_count, per_worker_buffer_size=max(1, self.prefetch)))
      ds = ds.map(self._steps.gather)
      if self.prefetch > 0:
        ds = grain.experimental.ThreadPrefetchIterDataset(
            ds, prefetch_buffer_size=self.prefetch)
    self._grain_it = iter(ds)
    self._it = self._grain_it

  def close(self) -> None:
    """Stops prefetch threads / worker processes (a later next() restarts them)."""
    if self._grain_it is not None and hasattr(self._grain_it, 'close'):
      self._grain_it.close()
    self._it = self._grain_it = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    if self.step_in_epoch >= self.steps_per_epoch:
      self.epoch, self.step_in_epoch = self.epoch + 1, 0
    if self._it is None:
      self._start()
    batch = next(self._it)
    self.step_in_epoch += 1
    return batch

  next = __next__


def eval_plan(data_dir_or_loader, config, split: str, batch_size: int):
  """(bucket id, (batch_size,) indices with -1 for dummies) per global eval batch.

  Examples are ordered by bucket, then index, so most batches need the smaller
  buckets; each example appears exactly once; the last batch is padded with -1.
  """
  loader = (data_dir_or_loader if isinstance(data_dir_or_loader, _Loader)
            else _Loader(config, data_dir_or_loader, split))
  order = np.lexsort((np.arange(len(loader.bucket_ids)), loader.bucket_ids))
  n_batches = -(-len(order) // batch_size)
  padded = np.full(n_batches * batch_size, -1, np.int64)
  padded[:len(order)] = order
  out = []
  for k in range(n_batches):
    idx = padded[k * batch_size:(k + 1) * batch_size]
    out.append((int(loader.bucket_ids[idx[idx >= 0]].max()), idx))
  return out


def eval_batches(config, data_dir: Optional[str], split: str, batch_size: int,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[Dict[str, np.ndarray]]:
  """This process's local slices of the global eval batches of `split`.

  `batch_size` is global (divisible by process_count). Every example appears exactly
  once over all processes; dummies (a copy of the batch's first example) have
  example_mask 0 and index -1 and must be left out of metrics.
  """
  if batch_size % process_count:
    raise ValueError(f'eval batch_size {batch_size} not divisible by '
                     f'process_count {process_count}')
  loader = _Loader(config, data_dir or resolve_data_dir(config), split)
  local = batch_size // process_count
  lo = process_index * local
  for bucket, idx in eval_plan(loader, config, split, batch_size):
    mine = idx[lo:lo + local]
    real = mine >= 0
    filler = np.where(real, mine, idx[0])   # idx[0] is always a real example
    yield loader.load(filler, bucket, 0, False, example_mask=real.astype(np.float32),
                      out_indices=np.where(real, mine, -1))


def num_eval_batches(config, data_dir: Optional[str], split: str,
                     batch_size: int) -> int:
  data_dir = data_dir or resolve_data_dir(config)
  n = store.load_dataset_info(data_dir)['counts'][split]
  return -(-n // batch_size)
