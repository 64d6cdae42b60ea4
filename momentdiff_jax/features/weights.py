"""Reading backbone weights from local files, safely and strictly.

* `read_tensors(path)`: a `.safetensors` file through the `safetensors` numpy API, a
  torch pickle (`.bin/.pt/.pth/.pyth`) through `torch.load(weights_only=True)`, which
  refuses to run code from the file, or a Caffe2 `.pkl` (`{'blobs': {name: array}}`)
  through `numpy_pickle`, which reads numpy arrays only and refuses any other global by
  name. Nothing is downloaded.
* `fill_params(abstract, assign, tensors, ...)`: builds a parameter tree from a name ->
  array dict, failing with every unmapped tensor, every parameter left unfilled and every
  shape mismatch listed, before anything is used.
"""
import os
import pickle
import zipfile
from typing import Callable, Iterable, Mapping, Optional

import jax
import numpy as np

from momentdiff_jax.features import numpy_pickle

TORCH_SUFFIXES = ('.bin', '.pt', '.pth', '.pyth', '.ckpt')
# Keys under which training scripts nest the model's state_dict (SlowFast: 'model_state').
_NESTED_KEYS = ('model_state', 'state_dict', 'model')


class WeightsError(ValueError):
  """A weights file is missing, unreadable, or does not match the model."""


def require_file(path: str, what: str, where: str) -> None:
  """Raises WeightsError naming `path` and where such weights are published."""
  if not os.path.isfile(path):
    raise WeightsError(
        f'{what}: file not found: {path}. {where} This project never downloads '
        'weights: fetch them yourself and pass the local path.')


def read_tensors(path: str) -> dict:
  """name -> float32/int numpy array from a safetensors file, a torch state_dict or
  a Caffe2 `.pkl` (its blob names, e.g. `res2_0_branch2a_w`).

  A torch file may hold the state_dict itself or a dict that nests it under
  'model_state' (SlowFast repo), 'state_dict' or 'model'; a `.pkl` that is a torch
  zip archive is read as torch.
  """
  if path.endswith('.safetensors'):
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise WeightsError(f'{path}: reading .safetensors needs the `safetensors` package '
                         "(pip install 'momentdiff-jax[features]')") from e
    try:
      return dict(load_file(path))
    except Exception as e:  # safetensors raises its own error types
      raise WeightsError(f'{path}: not a readable safetensors file ({e})') from e
  if path.endswith('.pkl') and not zipfile.is_zipfile(path):
    return read_caffe2_blobs(path)
  if not path.endswith(TORCH_SUFFIXES + ('.pkl',)):
    raise WeightsError(f'{path}: unknown weights format; expected .safetensors, a Caffe2 '
                       f'.pkl or one of {", ".join(TORCH_SUFFIXES)}')
  return _read_torch(path)


def read_caffe2_blobs(path: str) -> dict:
  """blob name -> numpy array of a Caffe2 checkpoint (`{'blobs': {...}, ...}` pickle).

  Read with `numpy_pickle.load`: numpy arrays and plain containers only; a file that
  names any other global (code) is refused by name before anything runs.
  """
  try:
    obj = numpy_pickle.load(path)
  except numpy_pickle.UnsafePickleError as e:
    raise WeightsError(f'{path}: not read: {e}') from e
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise WeightsError(f'{path}: not a readable Caffe2 .pkl checkpoint ({e})') from e
  blobs = obj.get('blobs') if isinstance(obj, Mapping) else None
  if not isinstance(blobs, Mapping):
    got = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(f'{path}: expected a Caffe2 checkpoint {{"blobs": {{name: array}}}}, '
                       f'got {got}')
  out = {}
  for name, value in blobs.items():
    if isinstance(value, (np.ndarray, np.generic, int, float)):  # weights and counters
      value = np.asarray(value)
      out[str(name)] = value.astype(np.float32) if value.dtype.kind == 'f' else value
  return out


def _read_torch(path: str) -> dict:
  """name -> array of a torch checkpoint, read with `torch.load(weights_only=True)`."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightsError(f'{path}: reading a torch checkpoint needs torch (CPU wheel is '
                       'enough); or convert it to .safetensors') from e
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:
    raise WeightsError(f'{path}: torch.load(weights_only=True) refused or failed: {e}. '
                       'Only plain tensor state_dicts are read (no code from files).') from e
  if isinstance(obj, Mapping):
    for key in _NESTED_KEYS:
      if key in obj and isinstance(obj[key], Mapping):
        obj = obj[key]
        break
  if not isinstance(obj, Mapping):
    raise WeightsError(f'{path}: expected a state_dict (name -> tensor), got {type(obj)}')
  out = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise WeightsError(f'{path}: entry {name!r} is {type(value).__name__}, not a tensor')
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    out[name] = value.numpy()
  return out


def _path_str(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def fill_params(abstract, assign: Callable[[str], Optional[tuple]],
                tensors: Mapping[str, np.ndarray], source: str,
                ignore: Iterable[str] = ()) -> dict:
  """Parameter tree shaped like `abstract`, filled from `tensors`.

  Args:
    abstract: pytree of ShapeDtypeStruct (e.g. `jax.eval_shape(model.init, ...)`).
    assign: torch name -> (param path 'a/b/c', transform fn) or None when the name has
      no place in the model; the transform maps the torch array to our layout.
    tensors: name -> array as read by `read_tensors`.
    source: file name for error messages.
    ignore: names present in published files that the model does not use on purpose
      (e.g. CLIP's text projection and logit scale).

  Raises:
    WeightsError listing unmapped tensors, unfilled parameters and shape mismatches.
  """
  ignore = set(ignore)
  filled, unmapped, bad_shape = {}, [], []
  expected = {_path_str(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
  for name in sorted(tensors):
    if name in ignore:
      continue
    target = assign(name)
    if target is None or target[0] not in expected:
      unmapped.append(f'{name} {tuple(tensors[name].shape)}')
      continue
    path, transform = target
    value = np.asarray(transform(tensors[name]))
    want = expected[path]
    if value.shape != tuple(want.shape):
      bad_shape.append(f'{name} {tuple(tensors[name].shape)} -> {path}: got '
                       f'{value.shape}, model needs {tuple(want.shape)}')
      continue
    if path in filled:
      bad_shape.append(f'{name}: {path} filled twice')
      continue
    filled[path] = value.astype(want.dtype)
  unfilled = [f'{p} {tuple(v.shape)}' for p, v in expected.items() if p not in filled]
  if unmapped or unfilled or bad_shape:
    parts = []
    for title, items in (('tensors with no place in the model', unmapped),
                         ('model parameters not in the file', unfilled),
                         ('shape mismatches', bad_shape)):
      if items:
        shown = items[:30] + ([f'... {len(items) - 30} more'] if len(items) > 30 else [])
        parts.append(f'{title} ({len(items)}):\n  ' + '\n  '.join(shown))
    raise WeightsError(f'{source}: weights do not match the model.\n' + '\n'.join(parts))
  return jax.tree_util.tree_map_with_path(lambda p, _: filled[_path_str(p)], abstract)
