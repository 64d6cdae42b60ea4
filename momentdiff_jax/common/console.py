"""What the entry points print: our progress lines, results and errors.

Libraries log through absl / Python logging at INFO (orbax alone writes ~20 lines per
checkpoint: handler registration, barriers, directory creation, throughput). Unless
the user asks with absl's `--verbosity` (e.g. `--verbosity=0` for INFO, `1` for
DEBUG), only their warnings that need action reach the console: ERROR and above for
absl/orbax/tfds, WARNING for JAX.
"""
import logging

from absl import logging as absl_logging

# Python loggers of libraries that log below ERROR without anything to act on.
_QUIET = ('absl', 'orbax', 'tensorflow_datasets', 'grain', 'etils')


def quiet_libraries(verbosity_given: bool = False) -> None:
  """Raises the library loggers' thresholds unless `--verbosity` was given.

  absl's handler sits on the root logger, so these levels decide what reaches it.
  """
  if verbosity_given:
    return
  absl_logging.set_verbosity(absl_logging.ERROR)
  for name in _QUIET:
    logging.getLogger(name).setLevel(logging.ERROR)


def verbosity_given(flag_values) -> bool:
  """True when `--verbosity`/`-v` was on the command line of an absl app."""
  return 'verbosity' in flag_values and bool(flag_values['verbosity'].present)
