r"""Extracts CLIP / SlowFast clip features and CLIP query features from video files.
Console script `momentdiff-extract`, or `python data_prep/extract_features.py`, same flags.

  python data_prep/extract_features.py --videos=DIR|GLOB --output=FEATS --clip_len=SECONDS \
      --backbones=clip[,slowfast] --clip_weights=PATH [--slowfast_weights=PATH] \
      [--queries=JSONL] [--num_shards=N --shard_index=I | --finalize]

Writes the Moment-DETR layout that build_dataset.py reads: FEATS/clip_features/<vid>.npz,
FEATS/slowfast_features/<vid>.npz (key `features`, (num_clips, dim) float32) and, with
--queries (jsonl rows with `qid` and `query`), FEATS/clip_text_features/qid<qid>.npz
(key `last_hidden_state`). <vid> is the video file name without its extension.
--clip_weights is a directory as Hugging Face `CLIPModel.save_pretrained` writes it
(e.g. openai/clip-vit-base-patch32; its tokenizer files are needed with --queries
only); --slowfast_weights a SlowFast 8x8 R50 Kinetics-400 checkpoint: the SlowFast
model zoo's SLOWFAST_8x8_R50.pkl reproduces the public features, pytorchvideo's .pyth
only shares their architecture (docs/features.md). Nothing is downloaded. Frames are
sampled per clip as the public feature releases were.

Several processes each take a disjoint share of the videos (by a hash of the video id)
into the same FEATS: the processes of one multi-process launch (`launch/local.sh NPROC
NDEV -- python data_prep/extract_features.py ...`, SLURM, TPU pods) automatically,
process 0 checking and finalizing once all are done; or independent jobs with
--num_shards=N --shard_index=I (array jobs), then one --finalize run (same --videos,
--output, --queries) that checks every video is there exactly once and writes
FEATS/extraction_manifest.json. A rerun skips videos whose files exist.
Exit status: 0 done; 3 some videos could not be decoded (listed, the others written);
4 shares missing (named, with their videos; rerun them); 1 an error before any video
was read; 2 a usage error.
"""
import os

from absl import flags

from momentdiff_jax.common import app

FLAGS = flags.FlagValues()
flags.DEFINE_string('videos', None, 'a directory of video files or a glob', required=True,
                    flag_values=FLAGS)
flags.DEFINE_string('output', None, 'feature root (FEATS)', required=True, flag_values=FLAGS)
flags.DEFINE_float('clip_len', None, 'seconds per clip (Charades-STA 1, QVHighlights 2); '
                   'required unless --finalize', flag_values=FLAGS)
flags.DEFINE_string('backbones', 'clip,slowfast',
                    'comma-separated: clip, slowfast (default both)', flag_values=FLAGS)
flags.DEFINE_string('clip_weights', None, 'Hugging Face CLIP directory', flag_values=FLAGS)
flags.DEFINE_string('slowfast_weights', None,
                    'SlowFast R50 checkpoint file (SLOWFAST_8x8_R50.pkl: the public '
                    'features)', flag_values=FLAGS)
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
flags.DEFINE_integer('num_shards', None, 'split the videos into N shares (array jobs); '
                     'with --shard_index', flag_values=FLAGS)
flags.DEFINE_integer('shard_index', None, 'this job\'s share, 0..N-1', flag_values=FLAGS)
flags.DEFINE_bool('finalize', False, 'extract nothing: check that every share is complete '
                  'and write the manifest (after --num_shards jobs; N is read from the '
                  'output when not given)', flag_values=FLAGS)

EXIT_FAILED_VIDEOS, EXIT_INCOMPLETE = 3, 4


def _resolve_share():
  """(shard index, shard count, launched): the process index and count of a
  multi-process launch (jax.distributed, started as main.py starts it), else the
  flags, else (0, 1)."""
  from momentdiff_jax.run import mesh  # pylint: disable=g-import-not-at-top
  explicit = FLAGS.num_shards is not None or FLAGS.shard_index is not None
  mesh.maybe_initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    if explicit:
      raise app.UsageError('--num_shards/--shard_index under a multi-process launch: each '
                           'process of a launch already takes its share; use one or the other')
    return jax.process_index(), jax.process_count(), True
  if not explicit:
    return 0, 1, False
  n, i = FLAGS.num_shards, FLAGS.shard_index
  if n is None or i is None or n < 1 or not 0 <= i < n:
    raise app.UsageError(f'--num_shards=N with --shard_index in 0..N-1, got --num_shards={n} '
                         f'--shard_index={i}')
  return i, n, False


def _encoders(bb, with_text: bool):
  """(encoders for the queries, encoders for the videos): the query features come
  from CLIP's text tower, so CLIP joins the first set even when the videos skip it.
  CLIP's tokenizer files are asked for only `with_text`."""
  names = bb.parse_names(FLAGS.backbones)
  if with_text and 'clip' not in names:
    names = names + ['clip']
  sf = dict(slowfast_frames=FLAGS.slowfast_frames, slowfast_crop=FLAGS.slowfast_crop,
            text=with_text)
  enc = bb.Encoders(names, FLAGS.clip_weights, FLAGS.slowfast_weights, FLAGS.batch_size, **sf)
  video_names = bb.parse_names(FLAGS.backbones)
  if video_names == enc.names:
    return enc, enc
  return enc, bb.Encoders(video_names, models=enc.models, clip_weights=FLAGS.clip_weights,
                          slowfast_weights=FLAGS.slowfast_weights,
                          batch_size=FLAGS.batch_size, **sf)


def _extract_share(videos, rows, index: int, num: int) -> dict:
  """Extracts shard `index` of `num` (videos and queries); returns extract_videos'
  summary. Records are checked first (the output's and every shard's) and kept in this
  shard's partial manifest from the start."""
  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.features import backbones as bb
  from momentdiff_jax.features import extract
  from momentdiff_jax.features import shards
  # pylint: enable=g-import-not-at-top
  enc, enc_video = _encoders(bb, rows is not None)
  recs = {bb.FEATURE_DIRS[n]: dict(enc_video.records[n], clip_len=float(FLAGS.clip_len))
          for n in enc_video.names}
  if rows is not None:
    recs[bb.TEXT_DIR] = extract.text_record(enc)
  shards.check_records(FLAGS.output, recs)
  shards.start_partial(FLAGS.output, index, num, recs)
  mine = shards.take_share(videos, lambda v: v[0], index, num)
  share = f'; shard {index} of {num}: {len(mine)} of them' if num > 1 else ''
  print(f'{len(videos)} videos{share}; backbones {enc_video.describe()}', flush=True)
  summary = extract.extract_videos(mine, FLAGS.output, enc_video, FLAGS.clip_len,
                                   num_workers=FLAGS.num_workers, overwrite=FLAGS.overwrite,
                                   progress=not FLAGS.no_progress, write_records=num == 1)
  if rows is not None:
    extract.extract_queries(shards.take_share(rows, lambda r: r['qid'], index, num),
                            FLAGS.output, enc, overwrite=FLAGS.overwrite,
                            write_records=num == 1)
  vid_of = {p: v for v, p in mine}
  failed = [[vid_of[p], p, why] for p, why in summary['failed']]
  bad = {f[0] for f in failed}
  shards.write_partial(FLAGS.output, index, num, {
      'status': 'done', 'records': recs, 'videos': [v for v, _ in mine if v not in bad],
      'failed': failed})
  return summary


def _finalize(videos, rows, num) -> int:
  """Every share complete? Writes the manifest; returns the exit status. `num` None:
  the one shard count whose files the output holds."""
  from momentdiff_jax.features import shards  # pylint: disable=g-import-not-at-top
  if num is None:
    counts = shards.shard_counts(FLAGS.output)
    if len(counts) != 1:
      raise ValueError(f'{FLAGS.output}: shard files of {counts or "no"} shard counts; '
                       'give --num_shards')
    num = counts[0]
  try:
    manifest = shards.finalize(FLAGS.output, videos, num, rows)
  except shards.IncompleteError as e:
    app.error(e)
    return EXIT_INCOMPLETE
  return EXIT_FAILED_VIDEOS if manifest['failed'] else 0


def _main():
  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.common.errors import DataError
  from momentdiff_jax.features import extract
  from momentdiff_jax.features.weights import WeightsError
  from momentdiff_jax.run import compile_cache
  from momentdiff_jax.run import mesh
  # pylint: enable=g-import-not-at-top
  try:
    if not FLAGS.finalize and (FLAGS.clip_len is None or FLAGS.clip_len <= 0):
      raise app.UsageError(f'--clip_len must be given and > 0, got {FLAGS.clip_len}')
    videos = extract.list_videos(FLAGS.videos)
    rows = extract.read_queries(FLAGS.queries) if FLAGS.queries else None
    if FLAGS.finalize:
      if int(os.environ.get('MOMENTDIFF_NUM_PROCESSES') or 1) > 1:
        raise app.UsageError('--finalize runs as one process, not under a launch')
      return _finalize(videos, rows, FLAGS.num_shards)
    index, num, launched = _resolve_share()
    compile_cache.enable(None)     # the backbones compile once per machine
    summary = _extract_share(videos, rows, index, num)
  except (ValueError, FileNotFoundError, WeightsError, DataError) as e:
    return app.error(e)
  if launched:
    mesh.barrier('extract_features: every share written')
    if index != 0:   # process 0 checks and reports for all, failures included
      return 0
  if launched or num == 1:
    return _finalize(videos, rows, num)
  print(f'Shard {index} of {num} done. Once all {num} are: the same command with '
        f'--finalize (and --num_shards={num}) checks them and writes the manifest.')
  # Unreadable videos are listed above and the others written; a distinct status lets
  # a pipeline notice the gap without parsing the log.
  return EXIT_FAILED_VIDEOS if summary['failed'] else 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
