"""Workdir checkpoints with orbax: `checkpoints/latest/<step>` and `checkpoints/best/<step>`.

Each checkpoint holds separate items so that evaluation restores only what it needs:
  params  the model parameters (pytree)
  train   `{'opt_state', 'step'}` (latest only)
  data    the input pipeline's iterator state, JSON (latest only)
The best manager keeps the single checkpoint with the highest validation
`MR-full-mAP`; it stores params only.

A run is a stack of R >= 1 replicas (`replicas.py`), and `WorkdirCheckpoints` takes
and returns replica-stacked trees. On disk, R > 1 replicas store one `latest`
checkpoint whose params and optimizer state carry a leading (R,) axis, and one best
manager per replica, `checkpoints/best_r<k>/`, each with that replica's own params.
A one-replica run keeps exactly the single-run layout above: its leading axis is
dropped when written and restored when read (`disk_replica` names the layout).
"""
import json
import os
import shutil
import uuid
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from momentdiff_jax.common import atomic

BEST_METRIC = 'MR-full-mAP'


class CheckpointMismatch(ValueError):
  """The stored parameters do not fit the model the config describes."""


def _shapes(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='/'): tuple(x.shape)
          for path, x in leaves}


def check_params_fit(stored_metadata, abstract_params, where: str) -> None:
  """Raises CheckpointMismatch listing every parameter whose stored shape (or presence)
  differs from `abstract_params`; called before orbax is asked to restore."""
  stored, wanted = _shapes(stored_metadata), _shapes(abstract_params)
  diffs = [f'{k}: stored {stored.get(k, "absent")}, config {wanted.get(k, "absent")}'
           for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
  if diffs:
    more = f'\n  ... and {len(diffs) - 10} more' if len(diffs) > 10 else ''
    raise CheckpointMismatch(
        f'{where}: the stored parameters do not fit the model of the config '
        f'({len(diffs)} differ):\n  ' + '\n  '.join(diffs[:10]) + more)


def _dir(workdir: str, which: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints', which)


def disk_replica(index: int, num_replicas: int) -> Optional[int]:
  """How the workdir layout names replica `index` of `num_replicas`: None for the one
  replica of a one-replica run (the single-run layout: `best/`, `eval/`, no replica
  axis in `latest`), else `index` (`best_r<k>/`, `eval/r<k>/`, a stacked `latest`)."""
  return None if num_replicas == 1 else int(index)


def best_name(replica: Optional[int] = None) -> str:
  """The best checkpoint's directory name for a `disk_replica` name: `best`, or
  `best_r<k>` for replica k of a multi-replica run."""
  return 'best' if replica is None else f'best_r{int(replica)}'


def _best_manager(path: str, read_only: bool) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      path, item_names=('params',),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=1, create=not read_only, read_only=read_only,
          best_fn=lambda m: m[BEST_METRIC], best_mode='max',
          keep_checkpoints_without_metrics=False))


class WorkdirCheckpoints:
  """The latest (for resuming) and best-on-val (for evaluation) checkpoint managers of
  a run of `num_replicas` replicas (one best manager per replica). Trees go in and
  come out replica-stacked (R, ...); the on-disk layout is `disk_replica`'s."""

  def __init__(self, workdir: str, max_to_keep: int = 2, read_only: bool = False,
               num_replicas: int = 1):
    self.num_replicas = num_replicas
    self.latest = ocp.CheckpointManager(
        _dir(workdir, 'latest'),
        item_names=('params', 'train', 'data'),
        item_handlers={'params': ocp.StandardCheckpointHandler(),
                       'train': ocp.StandardCheckpointHandler(),
                       'data': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only))
    self.bests = [_best_manager(_dir(workdir, best_name(disk_replica(k, num_replicas))),
                                read_only) for k in range(num_replicas)]

  def _stacked_on_disk(self) -> bool:
    return disk_replica(0, self.num_replicas) is not None

  def save_latest(self, step: int, params, opt_state, data_state: dict[str, Any]):
    """Saves the replica-stacked `params` and `opt_state` and the iterator state."""
    if not self._stacked_on_disk():
      params, opt_state = jax.tree.map(lambda x: x[0], (params, opt_state))
    self.latest.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        train=ocp.args.StandardSave({'opt_state': opt_state, 'step': step}),
        data=ocp.args.JsonSave(data_state)))

  def save_best(self, step: int, params, briefs: list[dict[str, float]]):
    """Replica r's slice of the stacked `params`, if `briefs[r][BEST_METRIC]` beats
    every earlier best of that replica."""
    for r, brief in enumerate(briefs):
      self.bests[r].save(
          step, args=ocp.args.Composite(params=ocp.args.StandardSave(
              jax.tree.map(lambda x: x[r], params))),
          metrics={BEST_METRIC: float(brief[BEST_METRIC])})

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def restore_latest(self, params, opt_state):
    """Returns (step, params, opt_state, data_state) of the latest checkpoint.

    `params` and `opt_state` are replica-stacked templates (arrays or
    `jax.ShapeDtypeStruct`s carrying their shardings); what comes back is stacked
    and placed alike.
    """
    step = self.latest.latest_step()
    stacked = self._stacked_on_disk()

    def on_disk(x):   # one replica: without its axis, replicated over the same mesh
      if stacked:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      return jax.ShapeDtypeStruct(x.shape[1:], x.dtype,
                                  sharding=NamedSharding(x.sharding.mesh, PartitionSpec()))

    disk = jax.tree.map(on_disk, (params, opt_state))
    check_params_fit(self.latest.item_metadata(step)['params'], disk[0],
                     os.path.join(self.latest.directory, str(step)))
    out = self.latest.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(disk[0]),
        train=ocp.args.StandardRestore({'opt_state': disk[1], 'step': 0}),
        data=ocp.args.JsonRestore()))
    trees = (out['params'], out['train']['opt_state'])
    if not stacked:
      shardings = jax.tree.map(lambda x: x.sharding, (params, opt_state))
      trees = jax.jit(lambda t: jax.tree.map(lambda x: x[None], t),
                      out_shardings=shardings)(trees)
    return step, trees[0], trees[1], out['data']

  def wait(self):
    self.latest.wait_until_finished()
    for b in self.bests:
      b.wait_until_finished()

  def close(self):
    self.latest.close()
    for b in self.bests:
      b.close()


def best_metric(workdir: str, replica: Optional[int] = None) -> Optional[float]:
  """`BEST_METRIC` of the (replica's) best checkpoint; None when there is none."""
  path = _dir(workdir, best_name(replica))
  if not os.path.isdir(path):
    return None
  mngr = ocp.CheckpointManager(path, item_names=('params',),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  step = mngr.best_step()
  value = None
  if step is not None:
    m = mngr.metrics(step)
    value = None if not m or BEST_METRIC not in m else float(m[BEST_METRIC])
  mngr.close()
  return value


def restore_params(workdir: str, which: str = 'best', abstract_params=None,
                   replica: Optional[int] = None):
  """One replica's params of `checkpoints/<which>` ('best' falls back to 'latest' when
  empty), restored replicated over this process's devices.

  `replica` is the replica's `disk_replica` name: None in a one-replica run; k for
  replica k of a multi-replica run (its `best_r<k>`, or its slice of the stacked
  `latest`). `abstract_params` (one replica's shapes), when given, is compared with the
  stored shapes first (`check_params_fit`). Returns (step, params, which_used).
  """
  order = {'best': (best_name(replica), 'latest'), 'latest': ('latest',)}[which]
  for name in order:
    path = _dir(workdir, name)
    if not os.path.isdir(path):
      continue
    mngr = ocp.CheckpointManager(path, item_names=('params',),
                                 item_handlers={'params': ocp.StandardCheckpointHandler()},
                                 options=ocp.CheckpointManagerOptions(read_only=True))
    step = mngr.best_step() if name != 'latest' else mngr.latest_step()
    if step is None:
      step = mngr.latest_step()
    if step is None:
      mngr.close()
      continue
    stored = mngr.item_metadata(step)['params']
    sliced = replica is not None and name == 'latest'     # (R, ...) on disk
    if abstract_params is not None:
      try:
        check_params_fit(jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape[1:], m.dtype),
                                      stored) if sliced else stored,
                         abstract_params, os.path.join(path, str(step)))
      except CheckpointMismatch:
        mngr.close()
        raise
    # The saved shardings name the devices of the run that wrote the checkpoint
    # (another process count, say); restore replicated over this process's devices.
    restore = ocp.args.StandardRestore(_replicated_like(stored))
    params = mngr.restore(step, args=ocp.args.Composite(params=restore))['params']
    mngr.close()
    if sliced:
      params = jax.tree.map(lambda x: x[replica], params)
    return step, params, name
  raise FileNotFoundError(
      f'No checkpoint under {os.path.join(workdir, "checkpoints")} '
      f'(looked for {" then ".join(order)}).')


def _replicated_like(metadata):
  sharding = NamedSharding(Mesh(jax.local_devices(), ('d',)), PartitionSpec())
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                      metadata)


def converted_workdir_refusal(workdir: str, overwrite: bool = False) -> Optional[str]:
  """None when `save_converted` may write `workdir`; else why not, naming what the
  folder holds (a non-empty workdir is replaced only with `overwrite`)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    return f'{workdir} is a file, not a folder'
  held = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []
  if not held or overwrite:
    return None
  names = [h + ('/' if os.path.isdir(os.path.join(workdir, h)) else '') for h in held]
  more = f' and {len(names) - 8} more' if len(names) > 8 else ''
  return (f'{workdir} is not empty (it holds {", ".join(names[:8])}{more}): '
          'pass --overwrite to replace it, or choose another workdir')


def _write_converted(workdir: str, config, params, step: int):
  """The checkpoint first, complete on disk, then `config.json` (atomically): a folder
  with a config.json always has the weights that config describes."""
  mngr = ocp.CheckpointManager(_dir(workdir, 'best'), item_names=('params',),
                               options=ocp.CheckpointManagerOptions(create=True))
  saved = mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
  mngr.wait_until_finished()
  mngr.close()
  if not saved:    # orbax skips a step that exists: never a new config on old weights
    raise RuntimeError(f'orbax did not save step {step} under {_dir(workdir, "best")}')
  atomic.write_text(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))


def save_converted(workdir: str, config, params, step: int = 0, overwrite: bool = False):
  """Writes a workdir: `params` as its best checkpoint (converted weights) and its
  `config.json`, which evaluate.py and Predictor load.

  Written whole in a hidden sibling folder (`.tmp-<name>-<random>`), then renamed into
  place; an existing workdir (only with `overwrite`; a non-empty one is refused by
  name) is moved aside just before and removed after. A crash leaves the previous
  workdir (or, between the two renames, none) plus a hidden sibling, never a workdir
  whose config names weights that are not there.
  """
  refused = converted_workdir_refusal(workdir, overwrite)
  if refused:
    raise FileExistsError(refused)
  workdir = os.path.abspath(workdir)
  parent, name = os.path.split(workdir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.tmp-{name}-{uuid.uuid4().hex[:8]}')
  os.mkdir(tmp)     # not mkdtemp (mode 0700): the workdir gets the usual permissions
  try:
    _write_converted(tmp, config, params, step)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = None
  if os.path.exists(workdir):
    old = os.path.join(parent, f'.old-{name}-{uuid.uuid4().hex[:8]}')
    os.rename(workdir, old)
  os.rename(tmp, workdir)
  if old:
    shutil.rmtree(old)


def load_config(workdir: str):
  """The ConfigDict a run wrote to `workdir/config.json`."""
  import ml_collections
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: is {workdir!r} a momentdiff_jax workdir?')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
