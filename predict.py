r"""Moments in a video file for a sentence, with a trained workdir.

  python predict.py --workdir=DIR --video=FILE --query="TEXT" \
      [--clip_weights=PATH] [--slowfast_weights=PATH] [--top_k=N] \
      [--output=OUT.json] [--plot=OUT.png]

Features are extracted from the video as the workdir's training features were (the
same backbones: a different one is refused by name). Prints and writes
{"video", "query", "duration", "pred_relevant_windows": [[start_s, end_s, score], ...]
best first, "pred_saliency_scores": [one per clip]}; --plot draws frames, windows and
saliency on one time axis.
"""
import json
import os
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Trained (or converted) run directory.', required=True)
flags.DEFINE_string('video', None, 'Video file.', required=True)
flags.DEFINE_string('query', None, 'The sentence to localize.', required=True)
flags.DEFINE_string('clip_weights', None,
                    'Hugging Face CLIP directory (CLIPModel.save_pretrained).')
flags.DEFINE_string('slowfast_weights', None, 'SlowFast 8x8 R50 checkpoint file.')
flags.DEFINE_integer('top_k', None, 'Keep the best K windows (default: all).')
flags.DEFINE_string('output', None, 'Also write the JSON here.')
flags.DEFINE_string('plot', None, 'Write a PNG timeline here.')
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to use.')
flags.DEFINE_integer('sampling_steps', None, 'DDIM steps (default: the config\'s).')
flags.DEFINE_integer('num_frames', 10, 'Frames in the --plot strip.')


def main(argv):
  del argv
  from momentdiff_jax.run import compile_cache  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.common import atomic, console  # pylint: disable=g-import-not-at-top
  console.quiet_libraries(console.verbosity_given(FLAGS))
  compile_cache.enable(None)     # the default directory (MOMENTDIFF_COMPILE_CACHE, ...)
  from momentdiff_jax import Predictor# pylint: disable=g-import-not-at-top
  from momentdiff_jax.features.video import VideoError  # pylint: disable=g-import-not-at-top
  from momentdiff_jax.features.weights import WeightsError  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(FLAGS.video):
    print(f'predict: error: video file not found: {FLAGS.video}', file=sys.stderr)
    return 1
  if FLAGS.top_k is not None and FLAGS.top_k < 1:
    print(f'predict: error: --top_k must be >= 1, got {FLAGS.top_k}', file=sys.stderr)
    return 1
  try:
    p = Predictor.from_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.sampling_steps,
                               clip_weights=FLAGS.clip_weights,
                               slowfast_weights=FLAGS.slowfast_weights)
    out = p.predict_video(FLAGS.video, FLAGS.query)
  except (ValueError, FileNotFoundError, VideoError, WeightsError) as e:
    print(f'predict: error: {e}', file=sys.stderr)
    return 1
  if FLAGS.top_k:
    out['pred_relevant_windows'] = out['pred_relevant_windows'][:FLAGS.top_k]
  text = json.dumps(out)
  print(text)
  if FLAGS.output:
    if os.path.dirname(FLAGS.output):
      os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    atomic.write_text(FLAGS.output, text + '\n')
  if FLAGS.plot:
    from momentdiff_jax.inference import plots  # pylint: disable=g-import-not-at-top
    from momentdiff_jax.features import video  # pylint: disable=g-import-not-at-top
    dur = out['duration']
    k = max(1, FLAGS.num_frames)
    times = [(i + 0.5) * dur / k for i in range(k)]
    plots.plot_video_timeline(FLAGS.plot, video.thumbnails(FLAGS.video, times), times, dur,
                              out['pred_relevant_windows'], out['pred_saliency_scores'],
                              p.config.data.clip_len, title=f'"{FLAGS.query}"')
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
