"""Replicas: several runs (seeds x swept hyper-parameters) trained as one program.

A run with `num_seeds = K` and sweep values `{key: (v_1 .. v_m), ...}` has
R = K x prod(m) replicas. Replica r = i * K + k is the grid point i (the keys'
values in itertools.product order of the sorted keys) with seed `seed + k`, so the
seeds of one grid point are contiguous and every grid point sees the same seeds.
All replicas read the same batches (data order and per-example sampling from
`data.seed`, default `seed`): replica r is the run `seed = seed + k,
data.seed = data.seed` with the grid point's values.

Swept values are traced: `hparams(config)` gives `{key: (R,) float32}` and, inside a
vmapped step, `with_hparams(config, hp)` gives a config whose swept leaves are that
replica's (traced) scalars, so one compiled program serves every value.
"""
import dataclasses
import itertools
import math
from typing import Any, Optional

import ml_collections
import numpy as np

from momentdiff_jax.common import config_base
from momentdiff_jax.common.config_base import SWEEPABLE, get_key, set_key

# Swept keys whose values must be > 0 (0 would change the program's meaning, e.g.
# grad_clip_norm = 0 means "no clipping", not "clip to 0").
_POSITIVE = ('grad_clip_norm', 'loss.sim_temperature', 'diffusion.scale')


@dataclasses.dataclass(frozen=True)
class Replica:
  index: int
  seed: int
  values: dict[str, float]   # swept key -> this replica's value

  def describe(self) -> dict[str, Any]:
    return {'replica': self.index, 'seed': self.seed, **self.values}


def sweep_values(config) -> dict[str, tuple[float, ...]]:
  """`config.sweep` parsed: {dotted key: values}, keys sorted; empty without a sweep.

  Values are 'V1,V2,...' strings (the command line) or sequences of numbers.
  """
  sweep = config.get('sweep', None)
  if sweep is None:
    return {}
  out = {}
  for key in SWEEPABLE:
    try:
      raw = get_key(sweep, key)
    except (KeyError, AttributeError):
      continue
    if raw is None:
      continue
    items = raw.split(',') if isinstance(raw, str) else list(raw)
    try:
      values = tuple(float(v) for v in items if not (isinstance(v, str) and not v.strip()))
    except ValueError as e:
      raise ValueError(f'config.sweep.{key}={raw!r}: expected numbers like 1e-4,2e-4') from e
    if not values:
      raise ValueError(f'config.sweep.{key} is empty')
    if not all(math.isfinite(v) for v in values):
      raise ValueError(f'config.sweep.{key}={raw!r} has a non-finite value')
    if key in _POSITIVE and min(values) <= 0:
      raise ValueError(f'config.sweep.{key}={raw!r}: every value must be > 0')
    if len(set(values)) != len(values):
      raise ValueError(f'config.sweep.{key}={raw!r} repeats a value')
    out[key] = values
  _check_unknown(sweep, '')
  return dict(sorted(out.items()))


def _check_unknown(node, prefix: str):
  """Keys a config file added to `sweep` that are not sweepable (shape or branch)."""
  for k, v in node.items():
    key = prefix + k
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      _check_unknown(v, key + '.')
    elif key not in SWEEPABLE and v is not None:
      raise ValueError(f'config.sweep.{key}: not a sweepable hyper-parameter; '
                       f'these are: {", ".join(SWEEPABLE)}')


def replicas(config) -> list[Replica]:
  """Every replica of the run, in replica-index order (see the module docstring)."""
  k = int(config.get('num_seeds', 1))
  if k < 1:
    raise ValueError(f'config.num_seeds must be >= 1, got {k}')
  sweep = sweep_values(config)
  keys = list(sweep)
  out = []
  for point in itertools.product(*sweep.values()):
    for s in range(k):
      out.append(Replica(len(out), int(config.seed) + s, dict(zip(keys, point))))
  return out


def num_replicas(config) -> int:
  return len(replicas(config))


def seeds(config) -> np.ndarray:
  """(R,) int seeds, one per replica."""
  return np.asarray([r.seed for r in replicas(config)], np.int64)


def hparams(config) -> dict[str, np.ndarray]:
  """{swept key: (R,) float32 values}; empty without a sweep."""
  reps = replicas(config)
  return {key: np.asarray([r.values[key] for r in reps], np.float32)
          for key in sweep_values(config)}


def with_hparams(config, hp: dict) -> ml_collections.ConfigDict:
  """A copy of `config` whose swept leaves are `hp`'s values (traced scalars under vmap)."""
  if not hp:
    return config
  out = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for key, value in hp.items():
    set_key(out, key, value)
  return out


def replica_config(config, index: int) -> ml_collections.ConfigDict:
  """The config of replica `index` as a single run: its seed and swept values set,
  `num_seeds = 1`, no sweep, `data.seed` pinned to the shared one."""
  reps = replicas(config)
  if not 0 <= index < len(reps):
    raise ValueError(f'replica {index} out of range: the run has {len(reps)} replicas')
  rep = reps[index]
  out = ml_collections.ConfigDict(config.to_dict())
  out.data.seed = config_base.data_seed(config)
  out.seed = rep.seed
  out.num_seeds = 1
  for key in SWEEPABLE:
    if get_key(out.sweep, key) is not None:
      set_key(out.sweep, key, None)
  for key, value in rep.values.items():
    set_key(out, key, type(get_key(config, key))(value))
  return out


def mean_std(values: list[dict]) -> tuple[dict, dict]:
  """Per-key mean and sample std (ddof 1; 0 for one value) over replicas' metric
  dicts; None values (a metric without queries) are skipped."""
  mean, std = {}, {}
  for key in values[0]:
    xs = [v[key] for v in values if v.get(key) is not None]
    if not xs:
      mean[key] = std[key] = None
      continue
    mean[key] = float(np.mean(xs))
    std[key] = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
  return mean, std


def replica_keys(config, tag: int):
  """(R,) PRNG keys `fold_in(PRNGKey(seed_r), tag)`: the key a single run with replica
  r's seed derives for `tag` (0 init, 1 training, 2 evaluation; see train.py)."""
  import jax
  import jax.numpy as jnp
  return jnp.stack([jax.random.fold_in(jax.random.PRNGKey(int(s)), tag)
                    for s in seeds(config)])


def aggregate(metrics: list[Optional[dict]], reps: list[Replica]) -> Optional[dict]:
  """The `<split>_metrics.json` of the replicas `reps` (their `metrics`, in order).

  One replica: its own metrics object (a single run's file). Several:
  `{"brief": mean over replicas, "brief_std": sample std, "replicas": [each replica's
  metrics object with its "replica", "seed" and swept values], "groups": [per sweep
  grid point: its values, seeds, brief mean and std]}` ("groups" only with a sweep).
  None when the split has no labels.
  """
  if any(m is None for m in metrics):
    return None
  if len(metrics) == 1:
    return metrics[0]
  mean, std = mean_std([m['brief'] for m in metrics])
  out = {'brief': mean, 'brief_std': std,
         'replicas': [{**rep.describe(), **m} for rep, m in zip(reps, metrics)]}
  if reps[0].values:
    groups = {}
    for rep, m in zip(reps, metrics):
      groups.setdefault(tuple(sorted(rep.values.items())), []).append((rep.seed, m['brief']))
    out['groups'] = []
    for values, members in groups.items():
      g_mean, g_std = mean_std([b for _, b in members])
      out['groups'].append({**dict(values), 'seeds': [s for s, _ in members],
                            'brief': g_mean, 'brief_std': g_std})
  return out


def format_mean_std(mean: dict, std: dict, keys=None) -> str:
  """'key mean ± std, ...' for a log line."""
  keys = keys or [k for k in mean if mean[k] is not None]
  return ', '.join(f'{k} {mean[k]:.2f} ± {std[k]:.2f}' for k in keys if mean[k] is not None)


def format_briefs(briefs: list[dict], prefix: str = '') -> str:
  """'key value, ...' of one replica's brief, 'key mean ± std, ...' over several
  (keys starting with `prefix`; metrics without queries left out)."""
  mean, std = mean_std(briefs)
  return ', '.join(f'{k} {v:.2f}' + (f' ± {std[k]:.2f}' if len(briefs) > 1 else '')
                   for k, v in mean.items() if k.startswith(prefix) and v is not None)
