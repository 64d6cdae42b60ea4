r"""The demo page: a local web page to try a trained workdir on videos and queries.
Console script `momentdiff-demo`, or `python demo.py`, same flags.

  python demo.py --workdir=DIR [--port=7860] [--clip_weights=PATH --slowfast_weights=PATH]
      [--videos=DIR] [--cache_dir=DIR]

Serves http://127.0.0.1:PORT/ (loopback only; --port=0 takes a free port) until Ctrl-C.
Video files need the backbones the workdir's features came from (as predict.py); a
workdir trained on the synthetic data offers its test videos and vocabulary, and any
workdir takes feature files. docs/demo.md describes the page.
"""
import os
import sys

from absl import flags

from momentdiff_jax.cli import predictor_flags
from momentdiff_jax.common import app

FLAGS = flags.FlagValues()
predictor_flags.define(FLAGS)
flags.DEFINE_integer('port', 7860, 'Port on 127.0.0.1 (0: any free port, printed).',
                     flag_values=FLAGS)
flags.DEFINE_string('videos', None, 'A folder of videos the page offers to pick from.',
                    flag_values=FLAGS)
flags.DEFINE_string('cache_dir', None, 'Uploads and rendered videos (default: a temp dir).',
                    flag_values=FLAGS)


def _main():
  try:
    # pylint: disable=g-import-not-at-top,unused-import
    import fastapi
    import python_multipart
    import uvicorn
    # pylint: enable=g-import-not-at-top,unused-import
  except ImportError as e:
    return app.error(f'{e.name} is missing: pip install -e \'.[demo]\'')
  if FLAGS.videos and not os.path.isdir(FLAGS.videos):
    return app.error(f'--videos is not a folder: {FLAGS.videos}')
  if not 0 <= FLAGS.port < 65536:
    return app.error(f'--port must be in 0..65535, got {FLAGS.port}')
  # JAX is imported after the flags are read (`--help` stays quick).
  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.run import compile_cache
  compile_cache.enable(None)
  from momentdiff_jax.demo import server
  from momentdiff_jax.features.weights import WeightsError
  # pylint: enable=g-import-not-at-top
  try:
    service = server.build_service(FLAGS.workdir, FLAGS.clip_weights, FLAGS.slowfast_weights,
                                   FLAGS.videos, FLAGS.cache_dir, FLAGS.checkpoint,
                                   FLAGS.sampling_steps)
  except (ValueError, FileNotFoundError, WeightsError) as e:
    return app.error(e)
  server.serve(service, FLAGS.port, lambda url: print(
      f'{app.prog()}: serving {url}  (Ctrl-C stops)', flush=True))
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
