r"""Builds a momentdiff_jax dataset (video-keyed store) from Moment-DETR-layout files.

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
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from momentdiff_jax.common import console  # pylint: disable=g-import-not-at-top
from momentdiff_jax.data.build import build_dataset  # pylint: disable=g-import-not-at-top
from momentdiff_jax.data.sources import DataError  # pylint: disable=g-import-not-at-top


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__)
  p.add_argument('--train', required=True, help='training annotations (jsonl)')
  p.add_argument('--val', default=None, help='validation annotations (jsonl)')
  p.add_argument('--test', required=True, help='test annotations (jsonl)')
  p.add_argument('--video_features', required=True,
                 help='comma-separated feature dirs, concatenated in this order')
  p.add_argument('--text_features', required=True, help='dir of qid<qid>.npz')
  p.add_argument('--clip_len', type=float, required=True, help='seconds per clip')
  p.add_argument('--output', required=True, help='dataset dir to create')
  p.add_argument('--text_key', default='last_hidden_state',
                 choices=['last_hidden_state', 'pooler_output'])
  p.add_argument('--pool_clips', type=int, default=0,
                 help='> 0: average-pool every video to this many clips (C3D: 100)')
  p.add_argument('--no_normalize_video', action='store_true',
                 help='skip the per-type L2 normalization of clip features')
  p.add_argument('--val_fraction', type=float, default=0.1,
                 help='share of training videos moved to val when --val is absent')
  p.add_argument('--seed', type=int, default=0, help='seed of the val video split')
  p.add_argument('--window_tolerance', type=float, default=2.0,
                 help='seconds a window may pass [0, duration] and still be clipped')
  p.add_argument('--on_bad_window', default='error', choices=['error', 'drop'])
  p.add_argument('--feature_dtype', default='float32',
                 choices=['float32', 'float16', 'bfloat16'],
                 help='stored feature dtype (16-bit: half the bytes; read as float32)')
  p.add_argument('--max_rows', type=int, default=0,
                 help='> 0: only the first rows of each file (quick tries)')
  p.add_argument('--overwrite', action='store_true', help='replace --output')
  p.add_argument('--no_progress', action='store_true')
  console.add_verbosity_arg(p)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  console.apply_verbosity(args.verbosity)
  try:
    build_dataset(
        train=args.train, val=args.val, test=args.test,
        video_dirs=[d for d in args.video_features.split(',') if d],
        text_dir=args.text_features, clip_len=args.clip_len, output=args.output,
        val_fraction=args.val_fraction, seed=args.seed, text_key=args.text_key,
        pool_clips=args.pool_clips, normalize_video=not args.no_normalize_video,
        tolerance=args.window_tolerance, on_bad_window=args.on_bad_window,
        feature_dtype=args.feature_dtype, max_rows=args.max_rows, overwrite=args.overwrite,
        progress=not args.no_progress)
  except (DataError, FileExistsError) as e:
    print(f'build_dataset: error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
