"""A run's workdir as the library sees it: the model a config builds, its parameters, and
restoring both from `config.json` plus a checkpoint.

A workdir holds R >= 1 replicas (`replicas.py`); `restore` returns them stacked on a
leading (R,) axis, as a run holds them, whatever the on-disk layout
(`checkpointing.disk_replica`). Sits below `train`, `evaluation` and `predictor` (they
all import it; it imports only the model, checkpointing and video_sources), so the
import graph flows one way: entry points -> train / evaluation / predictor -> workdir
-> checkpointing, model.
"""
import ast
import json
import os
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from momentdiff_jax.common import config_base
from momentdiff_jax.model import MomentDiff, abstract_params
from momentdiff_jax.release import video_sources
from momentdiff_jax.run import checkpointing
from momentdiff_jax.run import replicas as replicas_lib


def create_model(config, video_dim: int, text_dim: int) -> MomentDiff:
  return MomentDiff(config.model, video_dim=video_dim, text_dim=text_dim)


def init_params(model: MomentDiff, config, rng, video_dim: int, text_dim: int):
  """Fresh variables `{'params': ...}`, traced at the smallest bucket's shapes."""
  lv = config.data.length_buckets[0]
  lt = config.data.max_q_l
  n = config.diffusion.num_spans
  return model.init(
      rng, jnp.zeros((1, lv, video_dim)), jnp.ones((1, lv)), jnp.zeros((1, lt, text_dim)),
      jnp.ones((1, lt)), jnp.full((1, n, 2), 0.5), jnp.zeros((1,), jnp.int32))


def with_dataset(config, dataset) -> ml_collections.ConfigDict:
  """A copy of `config` with what the opened dataset fixes, as `config.json` stores it:
  feature dims, the resolved `data.dir` and the seconds per clip."""
  info = dataset.info
  config = ml_collections.ConfigDict(config.to_dict())
  config.video_dim = int(info['video_dim'])
  config.text_dim = int(info['text_dim'])
  config.data.dir = dataset.data_dir
  # Seconds per clip, for Predictor on raw features (None for pooled C3D features).
  config.data.clip_len = info.get('clip_len')
  # The order of the video feature sources these weights will expect.
  video_sources.record(config, info)
  # The backbones behind the features, for Predictor.predict_video on raw videos.
  config.data.backbones = info.get('backbones')
  return config


def abstract_variables(config) -> dict:
  """`{'params': ...}` of one replica as `jax.ShapeDtypeStruct`s (nothing computed)."""
  return {'params': abstract_params(config.model, config.video_dim, config.text_dim)}


def best_replica(workdir: str, config=None) -> int:
  """The replica whose best checkpoint scored highest on validation (0 when no best
  checkpoint was written yet)."""
  config = config or checkpointing.load_config(workdir)
  n = replicas_lib.num_replicas(config)
  scores = [checkpointing.best_metric(workdir, checkpointing.disk_replica(k, n))
            for k in range(n)]
  known = [(s, -k) for k, s in enumerate(scores) if s is not None]
  return -max(known)[1] if known else 0


class Restored(NamedTuple):
  """Replicas read back from a workdir; `params` stacked (R, ...) as numpy arrays."""
  config: ml_collections.ConfigDict
  model: MomentDiff
  params: Any
  steps: List[int]      # each replica's checkpoint step
  used: List[str]       # each replica's checkpoint directory name
  reps: List[replicas_lib.Replica]


def restore(workdir: str, checkpoint: str = 'best', config=None, replica='all') -> Restored:
  """A workdir's replicas, stacked as a run holds them (`place` puts them on devices).

  `checkpoint`: 'best' (each replica's best on validation, else the latest) or
  'latest'. `config` (default: the workdir's config.json) may carry evaluation
  overrides (`apply_overrides`). `replica='all'`: every replica of the run, the run's
  config. `replica=k`: replica k alone (R = 1) with its own config
  (`replicas.replica_config`: its seed and swept values as plain values).
  Stored shapes that do not fit the config raise `CheckpointMismatch` naming them.
  """
  config = checkpointing.load_config(workdir) if config is None else config
  reps = replicas_lib.replicas(config)
  n = len(reps)
  if str(replica) != 'all':
    if not 0 <= int(replica) < n:
      raise ConfigMismatch(f'{workdir} holds {n} replica(s) (0 .. {n - 1}); '
                           f'got replica={replica}')
    config = replicas_lib.replica_config(config, int(replica))
    reps = [reps[int(replica)]]
  abstract = abstract_variables(config)
  steps, trees, used = zip(*(checkpointing.restore_params(
      workdir, checkpoint, abstract, checkpointing.disk_replica(r.index, n)) for r in reps))
  stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)
  return Restored(config, create_model(config, config.video_dim, config.text_dim), stacked,
                  list(steps), list(used), reps)


def place(tree, sharding):
  """A tree of host arrays (every process holds all of it) -> global arrays on
  `sharding`, each process putting the parts its devices own."""
  return jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, sharding,
                                                             lambda idx: x[idx]), tree)


def init_from(source_workdir: str, config, info: dict, params, log=print):
  """One replica's params, from `source_workdir`'s best checkpoint (its best replica),
  to start a new run from (fine-tuning).

  `params` are the new run's params of one replica, or their shapes (they must match
  the source's: same model config and input dims). The source's video feature sources
  are matched to the new dataset's (`video_sources.align_to_dataset`): the same sources
  in another order permute the first video projection's input rows; others stop the
  run.
  """
  src = restore(source_workdir, 'best', replica=best_replica(source_workdir))
  one = jax.tree.map(lambda x: x[0], src.params)
  try:   # "stored": the source's parameters; "config": this run's model
    checkpointing.check_params_fit(one, params, f'init_from={source_workdir}')
  except checkpointing.CheckpointMismatch as e:
    raise checkpointing.CheckpointMismatch(
        f'{e}\nUse the same model config and feature dims as the source workdir.') from None
  one = video_sources.align_to_dataset(src.config, one, info, log=log)
  log(f'Initialized from {source_workdir} ({src.used[0]} checkpoint, step {src.steps[0]}).')
  return one


class ConfigMismatch(ValueError):
  """A config that does not fit the workdir it is run on (the message lists the keys)."""


# Keys that may change when a run resumes: they change neither the parameters, the data
# nor the update, only how long it runs and how often it logs, evaluates and saves.
RESUME_SAFE = ('num_epochs', 'num_train_steps', 'eval_every_steps', 'log_every_steps',
               'checkpoint_every_steps', 'max_checkpoints_to_keep', 'tensorboard',
               'eval_batch_size', 'nms_threshold', 'max_pred_windows',
               'diffusion.sampling_steps', 'diffusion.eta', 'data.worker_count',
               'data.prefetch', 'inference.', 'diffusion.eval_num_spans', 'diffusion.fusion',
               'diffusion.fusion_iou')
# Keys that fix the parameters' shapes or what the trained parameters compute:
# evaluate.py refuses to override them.
MODEL_KEYS = ('model.', 'video_dim', 'text_dim', 'diffusion.num_spans',
              'diffusion.timesteps', 'diffusion.schedule', 'diffusion.cosine_s',
              'diffusion.scale', 'diffusion.placeholder_std', 'diffusion.min_width',
              'data.use_tef', 'data.normalize_video', 'data.normalize_text',
              'video_sources', 'video_source_dims')


def flatten(config) -> Dict[str, Any]:
  """ConfigDict or nested dict -> {'model.hidden_dim': 64, ...}, JSON-normalized (tuples
  as lists), so that a config compares equal to its own config.json."""
  tree = json.loads(config.to_json_best_effort()) if hasattr(config, 'to_json_best_effort') \
      else json.loads(json.dumps(config))
  out = {}

  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(f'{prefix}{k}.', v)
      else:
        out[f'{prefix}{k}'] = v
  walk('', tree)
  return out


def _is(key: str, patterns: Sequence[str]) -> bool:
  return any(key == p or (p.endswith('.') and key.startswith(p)) for p in patterns)


def _fmt(diffs: List[Tuple[str, Any, Any]], old: str, new: str) -> str:
  return '\n'.join(f'  {k}: {old} {json.dumps(a)}, {new} {json.dumps(b)}' for k, a, b in diffs)


def check_resume(workdir: str, config) -> List[str]:
  """Compares `config` (dims and data.dir resolved) with `workdir/config.json`.

  Raises ConfigMismatch listing every key outside RESUME_SAFE whose value differs (both
  values given). Returns lines describing the resume-safe changes, and keys only one
  side has (configs written by another version of the code), for the log. No
  config.json: a fresh workdir, nothing to compare.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return []
  stored, now = flatten(checkpointing.load_config(workdir)), flatten(config)
  changed = [(k, stored[k], now[k]) for k in sorted(set(stored) & set(now))
             if stored[k] != now[k]]
  bad = [d for d in changed if not _is(d[0], RESUME_SAFE)]
  if bad:
    raise ConfigMismatch(
        f'{workdir} was trained with another config ({path}); these keys change the '
        f'parameters, the data or the update, so the run cannot resume:\n'
        f'{_fmt(bad, "workdir", "now")}\n'
        'Pass the workdir\'s values, or train into a new --workdir.')
  notes = [f'{k}: {json.dumps(a)} -> {json.dumps(b)}' for k, a, b in changed]
  notes += [f'{k}: not in {path}, now {json.dumps(now[k])}'
            for k in sorted(set(now) - set(stored))]
  notes += [f'{k}: {json.dumps(stored[k])} in {path}, not in this config'
            for k in sorted(set(stored) - set(now))]
  return notes


def parse_overrides(items: Sequence[str]) -> Dict[str, str]:
  """['data.dir=/x', 'eval_batch_size=16'] -> {'data.dir': '/x', ...} (values as text)."""
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise ConfigMismatch(f'override {item!r} is not KEY=VALUE (e.g. eval_batch_size=16)')
    out[key.strip()] = value
  return out


def _parse_value(text: str):
  """An override's text as JSON (`false`, `16`, `[32, 64]`) or a Python literal
  (`False`, `(32, 64)`, as ml_collections flags take them), else the bare string."""
  try:
    return json.loads(text)
  except ValueError:
    pass
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text                         # a bare string: data.dir=/x


def apply_overrides(config, overrides: Dict[str, str]):
  """A copy of a workdir's `config` with `overrides` (text values, typed like the
  workdir's). Keys that change the parameters (MODEL_KEYS) and unknown keys raise
  ConfigMismatch naming them. A changed `data.dir` is checked by `check_data_dims`."""
  flat = flatten(config)
  bad = [k for k in overrides if _is(k, MODEL_KEYS)]
  unknown = [k for k in overrides if k not in flat]
  if bad or unknown:
    parts = []
    if bad:
      parts.append('these keys fix the trained parameters and cannot change at evaluation: '
                   + ', '.join(f'{k} (workdir {json.dumps(flat.get(k))}, asked '
                               f'{overrides[k]})' for k in bad))
    if unknown:
      parts.append('unknown keys: ' + ', '.join(unknown))
    raise ConfigMismatch('; '.join(parts))
  out = ml_collections.ConfigDict(config.to_dict())
  for key, text in overrides.items():
    try:
      config_base.set_key(out, key, _parse_value(text))
    except TypeError:
      raise ConfigMismatch(f'override {key}={text}: the workdir\'s value is '
                           f'{json.dumps(flat[key])}, of another type') from None
  return out


def check_data_dims(config, info: Dict[str, Any], data_dir: str) -> None:
  """Raises ConfigMismatch when a dataset's feature dims differ from the workdir's."""
  diffs = [(k, config[k], int(info[k])) for k in ('video_dim', 'text_dim')
           if int(info[k]) != int(config[k])]
  if diffs:
    raise ConfigMismatch(
        f'the dataset {data_dir} does not fit the trained model:\n'
        f'{_fmt(diffs, "workdir", "dataset")}\n'
        'Use a dataset built from the same feature types as the training data.')
