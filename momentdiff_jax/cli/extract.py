r"""Extracts CLIP / SlowFast clip features and CLIP query features from video files.
Console script `momentdiff-extract`, or `python data_prep/extract_features.py`, same flags.

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
from absl import flags

from momentdiff_jax.common import app

FLAGS = flags.FlagValues()
flags.DEFINE_string('videos', None, 'a directory of video files or a glob', required=True,
                    flag_values=FLAGS)
flags.DEFINE_string('output', None, 'feature root (FEATS)', required=True, flag_values=FLAGS)
flags.DEFINE_float('clip_len', None, 'seconds per clip (Charades-STA 1, QVHighlights 2)',
                   required=True, flag_values=FLAGS)
flags.DEFINE_string('backbones', 'clip,slowfast',
                    'comma-separated: clip, slowfast (default both)', flag_values=FLAGS)
flags.DEFINE_string('clip_weights', None, 'Hugging Face CLIP directory', flag_values=FLAGS)
flags.DEFINE_string('slowfast_weights', None, 'SlowFast R50 checkpoint file',
                    flag_values=FLAGS)
flags.DEFINE_integer('slowfast_frames', 32,
                     'Fast-pathway frames per clip (32: SlowFast 8x8, the public features)',
                     flag_values=FLAGS)
flags.DEFINE_integer('slowfast_crop', 224, 'SlowFast input crop (224: the public features)',
                     flag_values=FLAGS)
flags.DEFINE_string('queries', None,
                    'jsonl with qid and query fields: also write query features',
                    flag_values=FLAGS)
flags.DEFINE_integer('batch_size', 64,
                     'CLIP frames per batch (SlowFast: batch_size / 8 clips), over all '
                     'local devices', flag_values=FLAGS)
flags.DEFINE_integer('num_workers', 2, 'video decoding threads', flag_values=FLAGS)
flags.DEFINE_bool('overwrite', False, 'recompute existing files', flag_values=FLAGS)
flags.DEFINE_bool('no_progress', False, 'no progress bar', flag_values=FLAGS)


def _encoders(bb):
  """(encoders for the queries, encoders for the videos): the query features come
  from CLIP's text tower, so CLIP joins the first set even when the videos skip it."""
  names = bb.parse_names(FLAGS.backbones)
  if FLAGS.queries and 'clip' not in names:
    names = names + ['clip']
  sf = dict(slowfast_frames=FLAGS.slowfast_frames, slowfast_crop=FLAGS.slowfast_crop)
  enc = bb.Encoders(names, FLAGS.clip_weights, FLAGS.slowfast_weights, FLAGS.batch_size, **sf)
  video_names = bb.parse_names(FLAGS.backbones)
  if video_names == enc.names:
    return enc, enc
  return enc, bb.Encoders(video_names, models=enc.models, clip_weights=FLAGS.clip_weights,
                          slowfast_weights=FLAGS.slowfast_weights,
                          batch_size=FLAGS.batch_size, **sf)


def _main():
  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.run import compile_cache
  compile_cache.enable(None)     # the backbones compile once per machine
  from momentdiff_jax.common.errors import DataError
  from momentdiff_jax.features import backbones as bb
  from momentdiff_jax.features import extract
  from momentdiff_jax.features.weights import WeightsError
  # pylint: enable=g-import-not-at-top
  try:
    bb.parse_names(FLAGS.backbones)
    if FLAGS.clip_len <= 0:
      raise ValueError(f'--clip_len must be > 0, got {FLAGS.clip_len}')
    videos = extract.list_videos(FLAGS.videos)
    enc, enc_video = _encoders(bb)
    print(f'{len(videos)} videos; backbones {enc_video.describe()}', flush=True)
    summary = extract.extract_videos(videos, FLAGS.output, enc_video, FLAGS.clip_len,
                                     num_workers=FLAGS.num_workers,
                                     overwrite=FLAGS.overwrite,
                                     progress=not FLAGS.no_progress)
    if FLAGS.queries:
      extract.extract_queries(FLAGS.queries, FLAGS.output, enc, overwrite=FLAGS.overwrite)
  except (ValueError, FileNotFoundError, WeightsError, DataError) as e:
    return app.error(e)
  # Unreadable videos are listed above and the others written; a distinct status lets
  # a pipeline notice the gap without parsing the log.
  return 3 if summary['failed'] else 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
