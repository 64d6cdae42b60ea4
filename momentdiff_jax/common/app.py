"""How every command runs: absl flags on the command's own `FlagValues`.

Each command (`momentdiff_jax/cli/*.py`, `summary.py`, `benchmarks/*.py`) defines its
flags at import on a `FlagValues` of its own (`FLAGS = flags.FlagValues()`, then
`flags.DEFINE_*(..., flag_values=FLAGS)`; `config_flags.DEFINE_config_file` for
`--config=FILE --config.KEY=VALUE`), and its `main(argv=None) -> int` is

    return app.run(FLAGS, _main, argv, __doc__)

Why not `absl.app.run` with the global `flags.FLAGS`: the commands are library modules
now (console scripts, tests calling `main([...])` in-process), and several of them in
one process would collide on the global flags (`--output`, `--workdir`, ...) and
keep the values of an earlier call. absl's logging flags (`--verbosity`/`-v`,
`--logtostderr`, ...) are shared into every command's `FlagValues`.

Exit status: what `main` returns (None: 0); 2 for a usage error (unknown flag, bad
value, missing required flag, `UsageError`), as argparse did; `error(...)` prints
`PROG: error: MESSAGE` for the 1 of a user error the command caught.
"""
import os
import sys
import types
from typing import Callable, Optional, Sequence

from absl import app as absl_app
from absl import flags
from absl import logging as absl_logging

from momentdiff_jax.common import console

UsageError = absl_app.UsageError
_HELP = ('--help', '-help', '-h', '--helpshort', '--helpfull', '-?')


def prog() -> str:
  """The command's name as typed: `main.py`, `momentdiff-train`, ..."""
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'momentdiff'


def error(message) -> int:
  """Prints `PROG: error: MESSAGE` (one line group, no traceback); returns 1."""
  print(f'{prog()}: error: {message}', file=sys.stderr)
  return 1


def help_text(flag_values: flags.FlagValues, doc: str) -> str:
  """The docstring, then every flag of the command with its help and default, then
  absl's logging flags."""
  modules = sorted(flag_values.flags_by_module_dict(), key=lambda m: m.startswith('absl.'))
  return '\n\n'.join([(doc or '').strip()] +
                     [flag_values.module_help(m).strip('\n') for m in modules])


def namespace(flag_values: flags.FlagValues) -> types.SimpleNamespace:
  """The command's own parsed flags (not absl's) as a plain object that the script may
  complete, e.g. `args.steps = [int(s) for s in args.steps.split(',')]`."""
  return types.SimpleNamespace(**{
      f.name: f.value for module, fl in flag_values.flags_by_module_dict().items()
      if not module.startswith('absl.') for f in fl})


def _share_logging_flags(flag_values: flags.FlagValues) -> None:
  """absl's logging flags (the same Flag objects as the global FLAGS) on this command."""
  for flag in flags.FLAGS.get_flags_for_module(absl_logging.__name__):
    if flag.name in flag_values:
      continue
    flag_values[flag.name] = flag     # its short name (-v) comes with it
    flag_values.register_flag_by_module(absl_logging.__name__, flag)   # for --help


def parse(flag_values: flags.FlagValues, argv: Optional[Sequence[str]] = None) -> None:
  """Parses `argv` (flags only; default sys.argv[1:]) from the defaults up.

  Raises flags.Error or UsageError. Values of an earlier parse are dropped first, so a
  command can be called again in one process with other flags.
  """
  argv = [prog()] + list(sys.argv[1:] if argv is None else argv)
  _share_logging_flags(flag_values)
  flag_values.unparse_flags()
  for name in [n for n in flag_values if '.' in n]:
    delattr(flag_values, name)   # `config.KEY` flags of an earlier parse, made anew below
  # config_flags reads `--config.KEY=VALUE` overrides from sys.argv: show it these.
  saved, sys.argv = sys.argv, argv
  try:
    rest = flag_values(argv)
  except (AttributeError, KeyError) as e:   # an override naming no config field
    raise UsageError(f'no such config field: {e}') from e
  finally:
    sys.argv = saved
  if len(rest) > 1:
    raise UsageError(f'unexpected arguments {rest[1:]} (every argument is a --flag)')
  # absl's log handler reads the global FLAGS; its logging flags were set above.
  flags.FLAGS.mark_as_parsed()


def run(flag_values: flags.FlagValues, main: Callable[[], Optional[int]],
        argv: Optional[Sequence[str]] = None, doc: str = '') -> int:
  """Parses the flags, quiets library logs unless `--verbosity` is given, runs `main()`.

  Returns the exit status (see the module docstring); `--help` prints `help_text`.
  """
  args = list(sys.argv[1:] if argv is None else argv)
  if any(a in _HELP for a in args[:args.index('--') if '--' in args else None]):
    _share_logging_flags(flag_values)
    print(help_text(flag_values, doc))
    return 0
  try:
    parse(flag_values, args)
  except (flags.Error, UsageError) as e:
    print(f'{prog()}: error: {e}\nRun `{prog()} --help` for the flags.', file=sys.stderr)
    return 2
  absl_logging.use_absl_handler()
  console.quiet_libraries(console.verbosity_given(flag_values))
  try:
    status = main()
  except UsageError as e:
    print(f'{prog()}: error: {e}', file=sys.stderr)
    return 2
  return 0 if status is None else int(status)
