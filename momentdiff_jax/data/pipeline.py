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
"""
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from momentdiff_jax.data import examples as ex_lib
from momentdiff_jax.data import store

_PLAN_TAG = 7919   # separates the plan's rng stream from per-example streams


def resolve_data_dir(config) -> str:
  """`config.data.dir`, or the built-in synthetic dataset (generated on first use)."""
  if config.data.dir:
    return config.data.dir
  if config.data.name == 'synthetic':
    from momentdiff_jax.data import synthetic
    return synthetic.ensure_synthetic()
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
  """Reads and collates examples of one split (host-side numpy)."""

  def __init__(self, config, data_dir: str, split: str):
    self.cfg = config.data
    self.seed = int(config.seed)
    self.source = store.open_source(data_dir, split)
    idx = store.load_index(data_dir, split)
    self.kept = ex_lib.kept_clips(idx['num_clips'], self.cfg.max_v_l)
    self.buckets = sorted(self.cfg.length_buckets)
    self.bucket_ids = bucket_of(self.kept, self.buckets)
    clip_len = idx['time_scale'] / np.maximum(idx['num_clips'], 1)
    # Labelled examples with some window inside the kept clips.
    self.has_target = (idx['min_start'] >= 0) & (idx['min_start'] < self.kept * clip_len)

  def load(self, indices: Sequence[int], bucket: int, epoch: int, train: bool,
           example_mask=None, out_indices=None) -> Dict[str, np.ndarray]:
    items = []
    for i in indices:
      rng = ex_lib.example_rng(self.seed, epoch, i, train)
      items.append(ex_lib.process_example(self.source[int(i)], self.cfg, rng, train))
    return ex_lib.collate(items, self.buckets[bucket], self.cfg, example_mask,
                          out_indices)


class TrainIterator:
  """Endless iterator of this process's local training batches.

  Args:
    config: the run config (uses seed, batch_size (global), data.*).
    data_dir: dataset dir; None resolves `config` (synthetic default).
    process_index, process_count: this host and the number of hosts.
    local_batch: examples per step on this host; default batch_size / process_count.
  """

  def __init__(self, config, data_dir: Optional[str] = None, process_index: int = 0,
               process_count: int = 1, local_batch: Optional[int] = None,
               split: str = 'train', prefetch: Optional[int] = None):
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
    self.seed = int(config.seed)
    self._loader = _Loader(config, data_dir, split)
    self._eligible = np.flatnonzero(self._loader.has_target)
    self.num_examples = len(self._eligible)
    self.num_skipped = len(self._loader.kept) - self.num_examples
    self.steps_per_epoch = self.num_examples // self.global_batch
    if self.steps_per_epoch == 0:
      raise ValueError(f'{self.num_examples} training examples < batch_size '
                       f'{self.global_batch}')
    self.prefetch = (int(config.data.get('prefetch', 2)) if prefetch is None
                     else prefetch)
    self.epoch, self.step_in_epoch = 0, 0
    self._plan_epoch, self._plan = None, None
    self._it = None

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
    self.epoch, self.step_in_epoch = int(state['epoch']), int(state['step_in_epoch'])
    self._it = None

  @property
  def step(self) -> int:
    """Global steps consumed so far."""
    return self.epoch * self.steps_per_epoch + self.step_in_epoch

  # -- iteration -------------------------------------------------------------------
  def plan(self, epoch: int) -> List[Tuple[int, np.ndarray]]:
    """The global batches of an epoch: list of (bucket id, (batch_size,) indices)."""
    if self._plan_epoch != epoch:
      self._plan = epoch_plan(self._loader.bucket_ids, self._eligible,
                              self.global_batch, self.seed, epoch,
                              len(self._loader.buckets))
      self._plan_epoch = epoch
    return self._plan

  def _load_step(self, epoch: int, step: int) -> Dict[str, np.ndarray]:
    bucket, idx = self.plan(epoch)[step]
    lo = self.process_index * self.local_batch
    return self._loader.load(idx[lo:lo + self.local_batch], bucket, epoch, True)

  def _start(self):
    epoch, start = self.epoch, self.step_in_epoch
    steps = list(range(start, self.steps_per_epoch))
    self.plan(epoch)   # computed once, before worker threads use it
    if self.prefetch > 0:
      import grain
      ds = grain.MapDataset.source(steps).map(lambda s: self._load_step(epoch, s))
      self._it = iter(ds.to_iter_dataset(grain.ReadOptions(
          num_threads=self.prefetch, prefetch_buffer_size=self.prefetch)))
    else:
      self._it = (self._load_step(epoch, s) for s in steps)

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    if self.step_in_epoch >= self.steps_per_epoch:
      self.epoch, self.step_in_epoch, self._it = self.epoch + 1, 0, None
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
