"""Long videos: sliding windows against the plain paths, on synthetic data made long.

  python benchmarks/long_videos.py --workdir=workdirs/synthetic \\
      [--output=benchmarks/results/long_videos_cpu.json] [--factor=8] [--num_queries=200]
      [--speed_clips=600] [--speed_calls=10] [--sampling_steps=N]

The workdir must be trained on the built-in synthetic data (`configs/synthetic.py`).
Its generator (same seed, so the same concepts and query words) writes a test split of
`--num_queries` videos of `--factor` x `data.max_v_l` clips each (8 x 64 = 512 clips of
1 s), moments as long as in training (2 clips .. 25% of the longest trained video),
placed uniformly anywhere (20% of queries have two). Every video is predicted four ways:
  predictor_windows   Predictor.predict, sliding windows (the default now)
  predictor_windows_model_score   the same, ranked by the model's probability alone
                      (`inference.window_score='model'`)
  predictor_padded    Predictor.predict, the whole video padded to a bucket (before)
  evaluate_windows    evaluation.predict_split (evaluate.py), sliding windows
  evaluate_truncated  evaluation.predict_split, the video cut to its first max_v_l
                      clips (evaluate.py before)
and scored with the standard metrics (`brief`: R1@0.5, R1@0.7, mAP...). Speed:
Predictor.predict queries/s on one `--speed_clips`-clip video (clips of the long test
videos tiled), windows and padded, after warm-up calls, as the median of
`--speed_calls` calls of each, interleaved; also the median CPU seconds per query (all
threads of the process), steadier than wall time on a shared machine. Nothing is written into the workdir.
"""
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from absl import flags
import jax
import numpy as np

import report   # a sibling: this folder is sys.path[0]
from momentdiff_jax import evaluation
from momentdiff_jax.common import app
from momentdiff_jax.data import dataset as dataset_lib
from momentdiff_jax.data import store
from momentdiff_jax.data import synthetic
from momentdiff_jax.inference import sampling
from momentdiff_jax.inference import windows as windows_lib
from momentdiff_jax.inference.predictor import Predictor
from momentdiff_jax.ops import diffusion
from momentdiff_jax.ops import metrics as metrics_lib
from momentdiff_jax.run import checkpointing
from momentdiff_jax.run import mesh as mesh_lib
from momentdiff_jax.run import replicas as replicas_lib
from momentdiff_jax.run import workdir as workdir_lib


def long_dataset(config, out_dir: str, factor: int, num: int) -> str:
  """The workdir's synthetic generator (its stored parameters) with videos of factor x
  max_v_l clips and moments of the trained lengths; returns the dataset dir."""
  meta_path = os.path.join(config.data.dir or synthetic.cache_dir(), 'metadata.json')
  with open(meta_path) as f:
    p = dict(synthetic.DEFAULTS, **json.load(f).get('synthetic', {}))
  n = factor * int(config.data.max_v_l)
  longest = p['max_window_frac'] * p['max_clips']     # longest trained moment, clips
  return synthetic.write_synthetic(out_dir, **dict(
      p, num_train=1, num_val=1, num_test=num, min_clips=n, max_clips=n,
      max_window_frac=longest / n))


def score(preds, rows) -> dict:
  m = metrics_lib.compute_metrics(preds, rows, 'synthetic', clip_length=1.0)['brief']
  return {k: m[k] for k in ('MR-full-R1@0.3', 'MR-full-R1@0.5', 'MR-full-R1@0.7',
                            'MR-full-mAP', 'MR-full-mAP@0.5')}


def predictor_preds(p: Predictor, reader, rows, windows: bool,
                    window_score: str = 'saliency') -> list:
  p.config.inference.sliding_windows = windows
  p.config.inference.window_score = window_score
  out = []
  for i, row in enumerate(rows):
    ex = reader.example(i)
    res = p.predict(ex['video'], ex['query'], float(ex['duration']), clip_len=1.0)
    out.append({'qid': row['qid'], **res})
  return out


def evaluate_preds(workdir: str, data_dir: str, steps: int, windows: bool) -> list:
  """evaluate.py's prediction pass (no files written) on the long dataset."""
  config = windows_lib.with_defaults(checkpointing.load_config(workdir))
  config = workdir_lib.apply_overrides(config, {'data.dir': data_dir,
                                                'inference.sliding_windows': str(windows)})
  run = workdir_lib.restore(workdir, 'best', config)
  mesh = mesh_lib.make_mesh(len(run.reps))
  rsh = mesh_lib.replica_sharding(mesh)
  fn = evaluation.make_sampler(run.model, run.config, steps,
                               jax.device_put(replicas_lib.hparams(run.config), rsh))
  ds = dataset_lib.open_dataset(run.config)
  preds, _ = evaluation.predict_split(
      fn, workdir_lib.place(run.params, rsh), run.config, ds, 'test', mesh,
      jax.device_put(replicas_lib.replica_keys(run.config, 2), rsh))
  return preds[0]


def speed(p: Predictor, reader, clips: int, calls: int) -> dict:
  """Predictor.predict on one `clips`-clip video, windows and padded, calls interleaved
  (so both see the same load of a shared machine): median wall and CPU seconds."""
  ex = reader.example(0)
  video = np.resize(ex['video'], (clips, ex['video'].shape[1]))   # tiled to `clips`
  s = windows_lib.settings(p.config)
  p.config.inference.window_score = 'saliency'

  def run(windows):
    p.config.inference.sliding_windows = windows
    w, c = time.perf_counter(), time.process_time()
    p.predict(video, ex['query'], float(clips), clip_len=1.0)
    return time.perf_counter() - w, time.process_time() - c

  for windows in (True, False, True, False):    # compile (padded: 640 clips), warm up
    run(windows)
  times = {True: [], False: []}
  for _ in range(calls):
    for windows in (True, False):
      times[windows].append(run(windows))
  out = {}
  for windows, name in ((True, 'windows'), (False, 'padded')):
    wall, cpu = (float(np.median(x)) for x in zip(*times[windows]))
    w = len(windows_lib.window_starts(clips, s.size, s.overlap)) if windows else 1
    out[name] = {'queries_per_s': round(1.0 / wall, 3), 'median_wall_s_per_query': round(wall, 4),
                 'median_cpu_s_per_query': round(cpu, 4), 'windows': w,
                 'sampler_rows': 1 << (w - 1).bit_length(),   # padded to a power of 2
                 'padded_clips_per_row': p.padded_length(s.size if windows else clips)}
  return out


FLAGS = flags.FlagValues()
flags.DEFINE_string('workdir', None, 'A workdir trained with configs/synthetic.py.',
                    required=True, flag_values=FLAGS)
flags.DEFINE_string('output', 'benchmarks/results/long_videos_cpu.json', 'JSON written here.',
                    flag_values=FLAGS)
flags.DEFINE_integer('factor', 8, 'video length in multiples of data.max_v_l (>= 2)',
                     flag_values=FLAGS)
flags.DEFINE_integer('num_queries', 200, 'long test videos, one query each',
                     flag_values=FLAGS)
flags.DEFINE_integer('speed_clips', 600, 'clips of the video of the speed figure',
                     flag_values=FLAGS)
flags.DEFINE_integer('speed_calls', 10, 'timed calls of the speed figure', flag_values=FLAGS)
flags.DEFINE_integer('sampling_steps', None, 'DDIM steps (default: the config\'s)',
                     flag_values=FLAGS)
flags.DEFINE_string('data_dir', None, 'where to write the long test videos (default: a '
                    'temporary folder, removed; an existing dataset there is reused)',
                    flag_values=FLAGS)


def _main():
  args = app.namespace(FLAGS)
  config = windows_lib.with_defaults(checkpointing.load_config(args.workdir))
  if config.data.name != 'synthetic':
    raise app.UsageError(f'--workdir={args.workdir} was trained on {config.data.name!r}: '
                         'this benchmark needs a workdir trained with configs/synthetic.py')
  if args.factor < 2 or args.num_queries < 1:
    raise app.UsageError('--factor must be >= 2 and --num_queries >= 1')
  tmp = None if args.data_dir else tempfile.mkdtemp(prefix='long_videos_')
  data_dir = args.data_dir or os.path.join(tmp, 'data')
  try:
    t0 = time.perf_counter()
    load_start = [round(x, 1) for x in os.getloadavg()]
    if not os.path.exists(os.path.join(data_dir, 'metadata.json')):
      long_dataset(config, data_dir, args.factor, args.num_queries)
    reader = store.SplitReader(data_dir, 'test')
    rows = store.load_rows(data_dir, 'test')
    p = Predictor.from_workdir(args.workdir, sampling_steps=args.sampling_steps)
    steps = p.sampling_steps
    results = {}
    for name, fn in (
        ('predictor_windows', lambda: predictor_preds(p, reader, rows, True)),
        ('predictor_windows_model_score',
         lambda: predictor_preds(p, reader, rows, True, 'model')),
        ('predictor_padded', lambda: predictor_preds(p, reader, rows, False)),
        ('evaluate_windows', lambda: evaluate_preds(args.workdir, data_dir, steps, True)),
        ('evaluate_truncated', lambda: evaluate_preds(args.workdir, data_dir, steps, False))):
      t = time.perf_counter()
      results[name] = dict(score(fn(), rows), wall_s=round(time.perf_counter() - t, 1))
      print(f'{name}: {json.dumps(results[name])}', flush=True)
    spd = speed(p, reader, args.speed_clips, args.speed_calls)
    print(f'speed ({args.speed_clips} clips): {json.dumps(spd)}', flush=True)
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
  s = windows_lib.settings(config)
  trained = {}
  path = os.path.join(args.workdir, 'eval', 'test_metrics.json')
  if os.path.exists(path):
    with open(path) as f:
      trained = {k: v for k, v in json.load(f)['brief'].items() if k.startswith('MR-full')}
  out = {
      'command': 'python benchmarks/long_videos.py ' + ' '.join(sys.argv[1:]),
      'workdir_test_split_trained_lengths': trained,
      'num_queries': args.num_queries, 'clips_per_video': args.factor * s.size,
      'clip_len_s': 1.0, 'trained_max_v_l': s.size, 'window_overlap': s.overlap,
      'windows_per_video': len(windows_lib.window_starts(args.factor * s.size, s.size,
                                                         s.overlap)),
      'window_nms_threshold': s.nms_threshold, 'window_join_score': s.join_score,
      'window_score': s.score,
      'sampling_steps': steps, 'metrics': results,
      'speed': dict(spd, clips=args.speed_clips, calls=args.speed_calls),
      'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                  'jax_backend': jax.default_backend(),
                  'load_average_1_5_15min': {'start': load_start,
                                             'end': [round(x, 1) for x in os.getloadavg()]}},
      **({'gpu': 'not measured: no GPU in the session that wrote this file'}
         if jax.default_backend() == 'cpu' else {}),
      'total_wall_s': round(time.perf_counter() - t0, 1),
  }
  report.write_result(args.output, out)
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
