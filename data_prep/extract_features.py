r"""Extracts CLIP / SlowFast clip features and CLIP query features from video files.

  python data_prep/extract_features.py --videos=DIR|GLOB --output=FEATS --clip_len=SECONDS \
      --backbones=clip[,slowfast] --clip_weights=PATH [--slowfast_weights=PATH] \
      [--queries=JSONL]

Writes the Moment-DETR layout that build_dataset.py reads: FEATS/clip_features/<vid>.npz,
FEATS/slowfast_features/<vid>.npz (key `features`, (num_clips, dim) float32) and, with
--queries (jsonl rows with `qid` and `query`), FEATS/clip_text_features/qid<qid>.npz
(key `last_hidden_state`). <vid> is the video file name without its extension.
--clip_weights is a directory as Hugging Face `CLIPModel.save_pretrained` writes it
(e.g. openai/clip-vit-base-patch32); --slowfast_weights a SlowFast 8x8 R50 Kinetics-400
checkpoint as the SlowFast model zoo / pytorchvideo publish it. Nothing is downloaded.
Frames are sampled per clip as the public feature releases were (docs/features.md).
A rerun skips videos whose files exist; unreadable videos are listed at the end (exit
status 3, the others written; 1 for an error before any video is read).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from momentdiff_jax.common import console  # pylint: disable=g-import-not-at-top


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__)
  p.add_argument('--videos', required=True, help='a directory of video files or a glob')
  p.add_argument('--output', required=True, help='feature root (FEATS)')
  p.add_argument('--clip_len', type=float, required=True,
                 help='seconds per clip (Charades-STA 1, QVHighlights 2)')
  p.add_argument('--backbones', default='clip,slowfast',
                 help='comma-separated: clip, slowfast (default both)')
  p.add_argument('--clip_weights', default=None, help='Hugging Face CLIP directory')
  p.add_argument('--slowfast_weights', default=None, help='SlowFast R50 checkpoint file')
  p.add_argument('--slowfast_frames', type=int, default=32,
                 help='Fast-pathway frames per clip (32: SlowFast 8x8, the public features)')
  p.add_argument('--slowfast_crop', type=int, default=224,
                 help='SlowFast input crop (224: the public features)')
  p.add_argument('--queries', default=None,
                 help='jsonl with qid and query fields: also write query features')
  p.add_argument('--batch_size', type=int, default=64,
                 help='CLIP frames per batch (SlowFast: batch_size / 8 clips), over all '
                      'local devices')
  p.add_argument('--num_workers', type=int, default=2, help='video decoding threads')
  p.add_argument('--overwrite', action='store_true', help='recompute existing files')
  p.add_argument('--no_progress', action='store_true')
  console.add_verbosity_arg(p)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  console.apply_verbosity(args.verbosity)
  from momentdiff_jax.run import compile_cache  # pylint: disable=g-import-not-at-top
  compile_cache.enable(None)     # the backbones compile once per machine
  from momentdiff_jax.features import backbones as bb  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.features import extract  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.features.weights import WeightsError  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.data.sources import DataError  # pylint: disable=g-import-not-at-top
  try:
    names = bb.parse_names(args.backbones)
    if args.queries and 'clip' not in names:
      names = names + ['clip']   # query features come from CLIP's text tower
    if args.clip_len <= 0:
      raise ValueError(f'--clip_len must be > 0, got {args.clip_len}')
    videos = extract.list_videos(args.videos)
    sf = dict(slowfast_frames=args.slowfast_frames, slowfast_crop=args.slowfast_crop)
    enc = bb.Encoders(names, args.clip_weights, args.slowfast_weights, args.batch_size, **sf)
    video_names = bb.parse_names(args.backbones)
    if video_names != enc.names:
      enc_video = bb.Encoders(video_names, models=enc.models,
                              clip_weights=args.clip_weights,
                              slowfast_weights=args.slowfast_weights,
                              batch_size=args.batch_size, **sf)
    else:
      enc_video = enc
    print(f'{len(videos)} videos; backbones {enc_video.describe()}', flush=True)
    summary = extract.extract_videos(videos, args.output, enc_video, args.clip_len,
                                     num_workers=args.num_workers,
                                     overwrite=args.overwrite,
                                     progress=not args.no_progress)
    if args.queries:
      extract.extract_queries(args.queries, args.output, enc, overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, WeightsError, DataError) as e:
    print(f'extract_features: error: {e}', file=sys.stderr)
    return 1
  # Unreadable videos are listed above and the others written; a distinct status lets
  # a pipeline notice the gap without parsing the log.
  return 3 if summary['failed'] else 0


if __name__ == '__main__':
  sys.exit(main())
