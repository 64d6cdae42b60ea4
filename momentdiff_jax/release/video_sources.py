"""Which video feature sources a model's weights expect, in which order, and matching them.

Several feature types (e.g. CLIP and SlowFast) are concatenated per clip in the order
of the dataset's feature dirs (the release: `--v_feat_dirs`, CLIP first in its SF+C
script). A workdir records that order as `config.video_sources` (source names: the
last component of each feature dir, e.g. `clip_features`) and, when known,
`config.video_source_dims`. From scratch the order is arbitrary; for trained or
converted weights it fixes which rows of the first video projection see which feature.

Meeting a dataset (or Predictor inputs) with the same sources in another order, the
input rows of the first video projection block are permuted: its LayerNorm scale and
bias and the rows of its kernel. LayerNorm's mean and variance do not depend on the
order of the features, so the permuted network computes exactly the same function
on the reordered input. Sources that cannot be matched stop with both lists.
"""
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

FIRST_VIDEO_BLOCK = 'input_vid_proj_0'


class SourceMismatch(ValueError):
  pass


def dataset_sources(info: dict) -> tuple[Optional[list], Optional[list]]:
  """(source names, dims per source) a built dataset records; (None, None) if unknown."""
  dirs = (info.get('sources') or {}).get('video_features')
  if not dirs:
    return None, None
  names = [os.path.basename(os.path.normpath(str(d))) for d in dirs]
  dims = info.get('video_dims_per_dir')
  return names, ([int(d) for d in dims] if dims and len(dims) == len(names) else None)


def record(config, info: dict) -> None:
  """Writes the dataset's sources into a training run's config (no-op if unknown)."""
  names, dims = dataset_sources(info)
  if names is None:
    return
  with config.unlocked():
    config.video_sources = names
    config.video_source_dims = dims


def input_permutation(model_sources: Optional[Sequence[str]],
                      data_sources: Optional[Sequence[str]],
                      data_dims: Optional[Sequence[int]], video_dim: int,
                      where: str = 'the dataset') -> Optional[np.ndarray]:
  """Index array `perm` with data column perm[i] = model input i; None when no change.

  Args:
    model_sources: the order the weights expect (`config.video_sources`).
    data_sources, data_dims: the order and sizes of the data's sources.
    video_dim: the model's input size (sources plus any TEF columns, which stay last).
    where: names the data side in messages.
  Raises:
    SourceMismatch: the two lists hold different sources, or the sizes do not add up.
  """
  if not model_sources or not data_sources or len(data_sources) == 1 == len(model_sources):
    return None       # unknown on one side, or one source: nothing to reorder
  model_sources, data_sources = list(model_sources), list(data_sources)
  if (sorted(model_sources) != sorted(data_sources)
      or len(set(data_sources)) != len(data_sources)):
    raise SourceMismatch(
        f'video feature sources differ: the weights expect {model_sources} (in this order), '
        f'{where} has {data_sources}. Name the feature dirs alike (or set video_sources '
        'in the workdir\'s config.json) so that the inputs can be matched.')
  if model_sources == data_sources:
    return None
  if data_dims is None or len(data_dims) != len(data_sources):
    raise SourceMismatch(f'{where} has video sources {data_sources} in another order than '
                         f'the weights ({model_sources}) but no size per source')
  start = dict(zip(data_sources, np.cumsum([0] + list(data_dims[:-1]))))
  size = dict(zip(data_sources, data_dims))
  total = int(sum(data_dims))
  if total > video_dim:
    raise SourceMismatch(f'{where}: sources {data_sources} of sizes {list(data_dims)} '
                         f'add up to {total}, more than the model\'s {video_dim} inputs')
  perm = [np.arange(start[s], start[s] + size[s]) for s in model_sources]
  perm.append(np.arange(total, video_dim))          # TEF columns keep their place
  return np.concatenate(perm)


def permute_first_video_block(params: dict, perm: np.ndarray, stacked: bool = False) -> dict:
  """Params whose first video projection reads inputs in the data's order.

  `params` is the `{'params': ...}` tree (or its inner dict); `stacked` when every leaf
  has a leading replica axis (R, ...). Model input i is data column perm[i], so the
  permuted block's row perm[i] is the original row i: its LayerNorm scale and bias and
  its Linear kernel rows. A gather with the inverse permutation, so it also runs on
  arrays placed over several devices or processes.
  """
  outer = 'params' in params and FIRST_VIDEO_BLOCK not in params
  tree = dict(params['params'] if outer else params)
  inv = jnp.asarray(np.argsort(perm))
  axis = 1 if stacked else 0
  rows = jax.jit(lambda x: jnp.take(x, inv, axis=axis))
  block = {}
  for name, sub in tree[FIRST_VIDEO_BLOCK].items():
    if name == 'LayerNorm':
      block[name] = {k: rows(v) for k, v in sub.items()}
    else:   # the Linear: only its kernel has input rows
      block[name] = {k: (rows(v) if k == 'kernel' else v) for k, v in sub.items()}
  tree[FIRST_VIDEO_BLOCK] = block
  return {**params, 'params': tree} if outer else tree


def align_to_dataset(config, params: dict, info: dict, log=print, stacked: bool = False) -> dict:
  """`params` reordered for a dataset's feature order (unchanged when it matches).

  `stacked`: params of several replicas with a leading (R,) axis on every leaf.
  """
  names, dims = dataset_sources(info)
  perm = input_permutation(config.get('video_sources'), names, dims, int(config.video_dim),
                           where=f'the dataset {config.data.get("dir", "")!r}')
  if perm is None:
    return params
  log(f'Video feature sources: the weights expect {list(config.video_sources)}, the dataset '
      f'has {names}; the first video projection\'s input rows are permuted to match.')
  return permute_first_video_block(params, perm, stacked)
