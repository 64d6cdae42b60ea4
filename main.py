"""Trains MomentDiff: `python main.py --config=configs/NAME.py --workdir=DIR`.

Rerunning the same command on the same DIR resumes from the latest checkpoint.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from momentdiff_jax import mesh as mesh_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/synthetic.py', 'Training configuration.',
                                lock_config=True)
flags.DEFINE_string('workdir', 'workdirs/synthetic', 'Where checkpoints, metrics and '
                    'predictions go.')
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', 0, 'Number of processes (multi-process runs).')
flags.DEFINE_integer('process_id', -1, 'This process (multi-process runs).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  mesh_lib.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  from momentdiff_jax import train  # after distributed start-up
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
