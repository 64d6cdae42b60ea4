r"""Builds a momentdiff_jax dataset (video-keyed store) from Moment-DETR-layout files.
Console script `momentdiff-build`, or `python data_prep/build_dataset.py`, same flags.

  python data_prep/build_dataset.py --train=TRAIN.jsonl [--val=VAL.jsonl] \
      --test=TEST.jsonl --video_features=DIR[,DIR...] --text_features=DIR \
      --clip_len=SECONDS --output=OUT

Video features: `<dir>/<vid>.npz` key `features`, `<dir>/<vid>.npy`, or C3D `.npz`
key `arr` (add --pool_clips=100 as the release does for TACoS/ActivityNet). Several
dirs are L2-normalized per type, cut to the shortest and concatenated. Text
features: `<dir>/qid<qid>.npz` key `last_hidden_state` (or --text_key=pooler_output).
Without --val, --val_fraction of the training *videos* (seeded) become `val`.
Windows past [0, duration] by <= --window_tolerance seconds are clipped and counted;
beyond it the build fails (or, with --on_bad_window=drop, drops them, counted).
Each video's features are stored once, whatever the number of queries sharing it;
--feature_dtype=float16|bfloat16 halves the bytes. On any error nothing is left
under --output.
"""
from absl import flags

from momentdiff_jax.common import app
from momentdiff_jax.common.errors import DataError
from momentdiff_jax.data.build import build_dataset

FLAGS = flags.FlagValues()
flags.DEFINE_string('train', None, 'training annotations (jsonl)', required=True,
                    flag_values=FLAGS)
flags.DEFINE_string('val', None, 'validation annotations (jsonl)', flag_values=FLAGS)
flags.DEFINE_string('test', None, 'test annotations (jsonl)', required=True, flag_values=FLAGS)
flags.DEFINE_string('video_features', None,
                    'comma-separated feature dirs, concatenated in this order', required=True,
                    flag_values=FLAGS)
flags.DEFINE_string('text_features', None, 'dir of qid<qid>.npz', required=True,
                    flag_values=FLAGS)
flags.DEFINE_float('clip_len', None, 'seconds per clip', required=True, flag_values=FLAGS)
flags.DEFINE_string('output', None, 'dataset dir to create', required=True, flag_values=FLAGS)
flags.DEFINE_enum('text_key', 'last_hidden_state', ['last_hidden_state', 'pooler_output'],
                  'key of the text feature files', flag_values=FLAGS)
flags.DEFINE_integer('pool_clips', 0,
                     '> 0: average-pool every video to this many clips (C3D: 100)',
                     flag_values=FLAGS)
flags.DEFINE_bool('no_normalize_video', False,
                  'skip the per-type L2 normalization of clip features', flag_values=FLAGS)
flags.DEFINE_float('val_fraction', 0.1,
                   'share of training videos moved to val when --val is absent',
                   flag_values=FLAGS)
flags.DEFINE_integer('seed', 0, 'seed of the val video split', flag_values=FLAGS)
flags.DEFINE_float('window_tolerance', 2.0,
                   'seconds a window may pass [0, duration] and still be clipped',
                   flag_values=FLAGS)
flags.DEFINE_enum('on_bad_window', 'error', ['error', 'drop'],
                  'a window past the tolerance fails the build, or is dropped (counted)',
                  flag_values=FLAGS)
flags.DEFINE_enum('feature_dtype', 'float32', ['float32', 'float16', 'bfloat16'],
                  'stored feature dtype (16-bit: half the bytes; read as float32)',
                  flag_values=FLAGS)
flags.DEFINE_integer('max_rows', 0, '> 0: only the first rows of each file (quick tries)',
                     flag_values=FLAGS)
flags.DEFINE_bool('overwrite', False, 'replace --output', flag_values=FLAGS)
flags.DEFINE_bool('no_progress', False, 'no progress bar', flag_values=FLAGS)


def _main():
  try:
    build_dataset(
        train=FLAGS.train, val=FLAGS.val, test=FLAGS.test,
        video_dirs=[d for d in FLAGS.video_features.split(',') if d],
        text_dir=FLAGS.text_features, clip_len=FLAGS.clip_len, output=FLAGS.output,
        val_fraction=FLAGS.val_fraction, seed=FLAGS.seed, text_key=FLAGS.text_key,
        pool_clips=FLAGS.pool_clips, normalize_video=not FLAGS.no_normalize_video,
        tolerance=FLAGS.window_tolerance, on_bad_window=FLAGS.on_bad_window,
        feature_dtype=FLAGS.feature_dtype, max_rows=FLAGS.max_rows,
        overwrite=FLAGS.overwrite, progress=not FLAGS.no_progress)
  except (DataError, FileExistsError) as e:
    return app.error(e)
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
