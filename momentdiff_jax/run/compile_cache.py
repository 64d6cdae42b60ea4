"""JAX's persistent compilation cache, on by default, and the compile seconds of a run.

A program compiled once (the train step per length bucket, the samplers) is written to
a cache directory outside any workdir and read back by every later run with the same
program, devices and JAX version: a resumed run or `evaluate.py` skips those compiles.

Directory, first match wins: `JAX_COMPILATION_CACHE_DIR` (JAX's own variable),
`MOMENTDIFF_COMPILE_CACHE`, `$XDG_CACHE_HOME/momentdiff_jax/jax_cache`,
`~/.cache/momentdiff_jax/jax_cache`. The entry points' `--compile_cache=DIR|off` flag
overrides it. Several processes may share the directory: with a size cap set, JAX
guards every read and write of the cache with a file lock (and evicts least recently
used entries beyond the cap); a cache entry that cannot be read is recompiled, never
fatal. In multi-process (`jax.distributed`) runs JAX lets process 0 alone write; on CPU
(gloo collectives, `launch/local.sh`) multi-process runs leave the cache off (see `enable`).
"""
import os
import threading
from typing import Optional

import jax
from jax import monitoring

ENV = 'MOMENTDIFF_COMPILE_CACHE'
OFF = ('off', 'none', '0', 'false')
MAX_BYTES = 4 << 30     # LRU cap; also what turns on JAX's cross-process file lock
# JAX's event around every XLA compile, a persistent-cache read included.
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
_HIT_EVENT = '/jax/compilation_cache/cache_hits'


def default_dir() -> str:
  """The cache directory when no flag is given (see the module docstring)."""
  for var in ('JAX_COMPILATION_CACHE_DIR', ENV):
    if os.environ.get(var):
      return os.environ[var]
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'momentdiff_jax', 'jax_cache')


def enable(directory: Optional[str]) -> Optional[str]:
  """Turns the persistent cache on in `directory` (None: `default_dir()`), or off for
  'off'/'none'/'0'/'false'/''. Returns the directory used, None when off.
  Call before the first compile."""
  directory = default_dir() if directory is None else directory
  if directory.strip().lower() in OFF + ('',):
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  if jax.process_count() > 1 and jax.default_backend() == 'cpu':
    # gloo (CPU collectives) allows 30 s for setting up each collective's context: a
    # process that reads a program from the cache reaches it long before a peer that
    # compiles the same program, and the run dies with DEADLINE_EXCEEDED.
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', directory)
  if jax.config.jax_compilation_cache_max_size == -1:   # not set by the user
    try:
      import filelock  # noqa: F401  (JAX needs it for the cap and its lock)
      jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
    except ImportError:
      pass
  return directory


class CompileTimer:
  """Sums the seconds XLA compiles (or reads from the cache) in this process.

  JAX reports every compile through `jax.monitoring`; listeners cannot be removed, so
  one timer per process (`timer()`).
  """

  def __init__(self):
    self.seconds = 0.0
    self.programs = 0
    self.cache_hits = 0
    self._lock = threading.Lock()
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)

  def _on_duration(self, event: str, secs: float, **_):
    if event == _COMPILE_EVENT:
      with self._lock:
        self.seconds += secs
        self.programs += 1

  def _on_event(self, event: str, **_):
    if event == _HIT_EVENT:
      with self._lock:
        self.cache_hits += 1

  def summary(self, directory: Optional[str]) -> str:
    where = (f'{self.cache_hits} read from the cache {directory}' if directory
             else 'persistent compilation cache off')
    return f'compiled {self.programs} programs in {self.seconds:.1f} s ({where})'


_TIMER: Optional[CompileTimer] = None


def timer() -> CompileTimer:
  global _TIMER
  if _TIMER is None:
    _TIMER = CompileTimer()
  return _TIMER
