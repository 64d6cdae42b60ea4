"""Trains MomentDiff: `python main.py --config=configs/NAME.py --workdir=DIR`
(console script `momentdiff-train`, same flags).

Rerunning the same command on the same DIR resumes from the latest checkpoint; a config
that changes the parameters or the data of DIR's run is refused first (the keys and
both values are printed). Library logs stay off the console unless `--verbosity=0`
(absl's flag) is given. Compiled programs are kept in JAX's persistent compilation
cache (`--compile_cache=DIR|off`; see momentdiff_jax/run/compile_cache.py).
"""
from absl import flags
from ml_collections import config_flags

from momentdiff_jax import train
from momentdiff_jax.common import app
from momentdiff_jax.data import DataError
from momentdiff_jax.run import checkpointing
from momentdiff_jax.run import compile_cache
from momentdiff_jax.run import mesh as mesh_lib
from momentdiff_jax.run import workdir as workdir_lib

FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file('config', 'configs/synthetic.py', 'Training configuration.',
                                flag_values=FLAGS, lock_config=True)
flags.DEFINE_string('workdir', 'workdirs/synthetic', 'Where checkpoints, metrics and '
                    'predictions go.', flag_values=FLAGS)
flags.DEFINE_string('compile_cache', None, 'Directory of JAX\'s persistent compilation '
                    'cache, shared by runs; "off" disables it. Default: '
                    '$MOMENTDIFF_COMPILE_CACHE, else ~/.cache/momentdiff_jax/jax_cache.',
                    flag_values=FLAGS)
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (multi-process runs).',
                    flag_values=FLAGS)
flags.DEFINE_integer('num_processes', 0, 'Number of processes (multi-process runs).',
                     flag_values=FLAGS)
flags.DEFINE_integer('process_id', -1, 'This process (multi-process runs).',
                     flag_values=FLAGS)

# Bad input the user can fix: one message, no traceback.
USER_ERRORS = (workdir_lib.ConfigMismatch, checkpointing.CheckpointMismatch, DataError,
               FileNotFoundError)


def _main():
  mesh_lib.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  cache_dir = compile_cache.enable(FLAGS.compile_cache)
  timer = compile_cache.timer()
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except USER_ERRORS as e:
    return app.error(e)
  train.log(timer.summary(cache_dir))
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
