r"""Moments in a video file for a sentence, with a trained workdir.
Console script `momentdiff-predict`, or `python predict.py`, same flags.

  python predict.py --workdir=DIR --video=FILE --query="TEXT" \
      [--clip_weights=PATH] [--slowfast_weights=PATH] [--top_k=N] \
      [--output=OUT.json] [--plot=OUT.png]

Features are extracted from the video as the workdir's training features were (the
same backbones: a different one is refused by name). Prints and writes
{"video", "query", "duration", "pred_relevant_windows": [[start_s, end_s, score], ...]
best first, "pred_saliency_scores": [one per clip]}; --plot draws frames, windows and
saliency on one time axis. A video longer than the workdir's `data.max_v_l` clips is
searched in overlapping windows of that length, merged (docs/long_videos.md).
"""
import json
import os

from absl import flags

from momentdiff_jax.cli import predictor_flags
from momentdiff_jax.common import app
from momentdiff_jax.common import atomic

FLAGS = flags.FlagValues()
predictor_flags.define(FLAGS)
flags.DEFINE_string('video', None, 'Video file.', required=True, flag_values=FLAGS)
flags.DEFINE_string('query', None, 'The sentence to localize.', required=True,
                    flag_values=FLAGS)
flags.DEFINE_integer('top_k', None, 'Keep the best K windows (default: all).',
                     flag_values=FLAGS)
flags.DEFINE_string('output', None, 'Also write the JSON here.', flag_values=FLAGS)
flags.DEFINE_string('plot', None, 'Write a PNG timeline here.', flag_values=FLAGS)
flags.DEFINE_integer('num_frames', 10, 'Frames in the --plot strip.', flag_values=FLAGS)


def _plot(out: dict, clip_len: float) -> None:
  """The --plot PNG: frames, windows and saliency on one time axis."""
  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.features import video
  from momentdiff_jax.inference import plots
  # pylint: enable=g-import-not-at-top
  dur = out['duration']
  k = max(1, FLAGS.num_frames)
  times = [(i + 0.5) * dur / k for i in range(k)]
  plots.plot_video_timeline(FLAGS.plot, video.thumbnails(FLAGS.video, times), times, dur,
                            out['pred_relevant_windows'], out['pred_saliency_scores'],
                            clip_len, title=f'"{FLAGS.query}"')


def _main():
  # JAX and the backbones are imported after the flags are read (`--help` stays quick).
  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.run import compile_cache
  compile_cache.enable(None)     # the default directory (MOMENTDIFF_COMPILE_CACHE, ...)
  from momentdiff_jax import Predictor
  from momentdiff_jax.features.video import VideoError
  from momentdiff_jax.features.weights import WeightsError
  # pylint: enable=g-import-not-at-top
  if not os.path.isfile(FLAGS.video):
    return app.error(f'video file not found: {FLAGS.video}')
  if FLAGS.top_k is not None and FLAGS.top_k < 1:
    return app.error(f'--top_k must be >= 1, got {FLAGS.top_k}')
  try:
    p = Predictor.from_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.sampling_steps,
                               clip_weights=FLAGS.clip_weights,
                               slowfast_weights=FLAGS.slowfast_weights)
    out = p.predict_video(FLAGS.video, FLAGS.query)
  except (ValueError, FileNotFoundError, VideoError, WeightsError) as e:
    return app.error(e)
  if FLAGS.top_k:
    out['pred_relevant_windows'] = out['pred_relevant_windows'][:FLAGS.top_k]
  text = json.dumps(out)
  print(text)
  if FLAGS.output:
    if os.path.dirname(FLAGS.output):
      os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    atomic.write_text(FLAGS.output, text + '\n')
  if FLAGS.plot:
    _plot(out, p.config.data.clip_len)
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
