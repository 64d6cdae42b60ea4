"""Reading pickles that hold only numpy arrays and plain containers, without running code.

Caffe2 checkpoints (the SlowFast model zoo's `SLOWFAST_8x8_R50.pkl`, Detectron's
`.pkl` files) are Python pickles of `{'blobs': {name: numpy array}, ...}`, written by
Python 2. `pickle.load` on such a file would import and call whatever globals the file
names (`os.system` included). `NumpyOnlyUnpickler` resolves a global only when it is
one of the few numpy reconstruction functions an array or scalar pickle needs, and
refuses any other by name, before anything is called:

* `numpy.core.multiarray._reconstruct` + `numpy.ndarray` + `numpy.dtype`: an array, its
  raw bytes restored by `ndarray.__setstate__` (protocols 0-4, Python 2 and 3);
* `numpy.core.numeric._frombuffer`: an array in protocol 5;
* `numpy.core.multiarray.scalar`: a numpy scalar (e.g. an iteration counter);
* `_codecs.encode(text, 'latin1')`: how Python 3 writes bytes in protocols 0-2 (only
  that call: text to latin-1 bytes);
and the same under numpy 2's `numpy._core` names. Dicts, lists, tuples, strings and
numbers need no global. Object arrays (whose items would be arbitrary objects) are
refused after loading. `encoding='latin1'` reads Python 2's byte strings as numpy
expects (the SlowFast code loads these files the same way).
"""
import codecs
import pickle

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle names a global outside the numpy allow-list."""


def _latin1_encode(text, encoding='latin1', errors='strict'):
  if not isinstance(text, str) or codecs.lookup(encoding).name != 'iso8859-1':
    raise UnsafePickleError(f'_codecs.encode called with {type(text).__name__}, '
                            f'{encoding!r}: only text -> latin-1 bytes is allowed')
  return text.encode('latin1', errors)


def _allowed_globals() -> dict:
  core = getattr(np, '_core', None) or np.core
  allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
             ('_codecs', 'encode'): _latin1_encode}
  for package in ('numpy.core', 'numpy._core'):
    allowed[(f'{package}.multiarray', '_reconstruct')] = core.multiarray._reconstruct
    allowed[(f'{package}.multiarray', 'scalar')] = core.multiarray.scalar
    allowed[(f'{package}.numeric', '_frombuffer')] = core.numeric._frombuffer
  return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
  """`pickle.Unpickler` whose `find_class` knows only the numpy allow-list above."""

  _ALLOWED = None

  def find_class(self, module, name):
    if NumpyOnlyUnpickler._ALLOWED is None:
      NumpyOnlyUnpickler._ALLOWED = _allowed_globals()
    found = NumpyOnlyUnpickler._ALLOWED.get((module, name))
    if found is None:
      raise UnsafePickleError(f'the pickle names the global {module}.{name}, which is not '
                              'a numpy array reconstruction function: refused (only numpy '
                              'arrays and plain containers are read)')
    return found

  def persistent_load(self, pid):
    raise UnsafePickleError(f'the pickle holds a persistent reference {pid!r}: refused')


def _check_arrays(obj, where='') -> None:
  """Refuses object arrays anywhere in `obj` (dicts, lists, tuples walked)."""
  if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
    raise UnsafePickleError(f'{where or "value"}: an object array (dtype {obj.dtype}): '
                            'refused, only numeric arrays are read')
  if isinstance(obj, dict):
    for k, v in obj.items():
      _check_arrays(v, f'{where}[{k!r}]')
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj):
      _check_arrays(v, f'{where}[{i}]')


def load(path: str):
  """The object in the pickle file `path`; raises UnsafePickleError (naming the
  global) for anything but numpy arrays/scalars in plain containers."""
  with open(path, 'rb') as f:
    obj = NumpyOnlyUnpickler(f, encoding='latin1').load()
  _check_arrays(obj)
  return obj
