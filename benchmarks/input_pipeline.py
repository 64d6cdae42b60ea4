"""Input pipeline speed and dataset build cost at real dataset shapes.

  python benchmarks/input_pipeline.py [--output=FILE.json] [--datasets=charades_sf_c,tacos]
      [--annotations=DIR] [--workdir=DIR] [--feature_dtype=float32] [--steps=N]
  python benchmarks/input_pipeline.py --corpus_queries=200000 [--train_steps=5]

Per dataset shape, on the real annotation rows (`--annotations`, default
../shared/data/annotations) with generated features of the real dims:
  charades_sf_c  Charades-STA, SlowFast 2304 + CLIP 512 per 1 s clip, CLIP text 512
  qvhighlights   QVHighlights, SlowFast + CLIP per 2 s clip, CLIP text 512 (~8.6 GB)
  tacos          TACoS, C3D 4096 pooled to 100 clips, GloVe text 300
it builds the dataset with data_prep's builder in a fresh process (wall time, peak
RSS, bytes on disk against the unique video + text feature bytes), then measures
training examples/s of the input pipeline alone (read, bucket, pad, TEF, saliency
sampling; no model) with the dataset's config, batch 32, for data.worker_count 0
(prefetch threads), 1 and 2. JSON: `examples_per_s` {dataset: {"0", "1", "2"}},
`datasets` {dataset: {bytes_on_disk, unique_feature_bytes, build_s, peak_rss_bytes,
...}}.

`--corpus_queries=N` instead generates a corpus of N training queries (small dims,
`--queries_per_video` per video), builds it, reports the build's peak RSS, and trains
`--train_steps` steps on it with main.py (0: no training), reporting that process's
peak RSS: run it at two sizes ~10x apart to see that neither grows with the number of
queries.
"""
import json
import os
import shutil
import subprocess
import sys
import time

from absl import flags
import numpy as np

import report   # a sibling: this folder is sys.path[0]
from momentdiff_jax.common import app
from momentdiff_jax.common import config_base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPES = {
    # name: (annotation files (train, val, test), video dims, text dim, clip_len,
    #        pool_clips, config module)
    'charades_sf_c': (('charades/charades_sta_train_tvr_format.jsonl', None,
                       'charades/charades_sta_test_tvr_format.jsonl'),
                      (2304, 512), 512, 1.0, 0, 'charades'),
    'qvhighlights': (('highlight/highlight_train_release.jsonl',
                      'highlight/highlight_val_release.jsonl',
                      'highlight/highlight_test_release.jsonl'),
                     (2304, 512), 512, 2.0, 0, 'qvhighlights'),
    'tacos': (('tacos/train_tacos.jsonl', 'tacos/val_tacos.jsonl',
               'tacos/test_tacos.jsonl'), (4096,), 300, 2.0, 100, 'tacos'),
}
_CHILD_BUILD = '''
import json, resource, sys, time
from momentdiff_jax.data.build import build_dataset
kw = json.loads(sys.argv[1])
t = time.perf_counter()
build_dataset(progress=False, log=lambda s: None, **kw)
print(json.dumps({'build_s': time.perf_counter() - t,
                  'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
'''


_CHILD_TRAIN = '''
import json, resource, runpy, sys
sys.argv = sys.argv[1:]
try:
  runpy.run_path(sys.argv[0], run_name='__main__')
finally:
  print(json.dumps({'peak_rss_bytes':
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}),
        file=sys.stderr)
'''


def _rows(path):
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def generate_features(root, files, dims, text_dim, clip_len, pool_clips, seed=0,
                      max_rows=0):
  """Random features for every vid / qid of `files` in the Moment-DETR layout.

  Clip counts follow the durations (ceil(duration / clip_len)); pooled (C3D) videos
  get ceil(duration / 2) source clips. Returns (video dirs, text dir, feature bytes).
  """
  rng = np.random.default_rng(seed)
  vdirs = [os.path.join(root, f'video{k}') for k in range(len(dims))]
  tdir = os.path.join(root, 'text')
  for d in vdirs + [tdir]:
    os.makedirs(d, exist_ok=True)
  done = set()
  for path in files:
    for r in _rows(path)[:max_rows or None]:
      if r['vid'] not in done:
        done.add(r['vid'])
        n = int(np.ceil(float(r['duration']) / (2.0 if pool_clips else clip_len) - 1e-6))
        for d, dim in zip(vdirs, dims):
          x = rng.random((max(n, 1), dim), np.float32) - 0.5
          key = 'arr' if pool_clips else 'features'
          np.savez(os.path.join(d, f'{r["vid"]}.npz'), **{key: x})
      n_tok = len(r['query'].split()) + 2
      np.savez(os.path.join(tdir, f'qid{r["qid"]}.npz'),
               last_hidden_state=rng.random((n_tok, text_dim), np.float32) - 0.5)
  return vdirs, tdir


def _child_env() -> dict:
  """The environment of the child processes: this checkout's package first."""
  path = [ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
  return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def build(kw) -> dict:
  """Runs build_dataset in a fresh process: wall time, peak RSS."""
  res = subprocess.run([sys.executable, '-c', _CHILD_BUILD, json.dumps(kw)],
                       capture_output=True, text=True, check=False, env=_child_env())
  if res.returncode:
    raise RuntimeError(f'build failed: {res.stderr[-3000:]}')
  return json.loads(res.stdout.strip().splitlines()[-1])


def pipeline_rate(data_dir, config_name, workers, steps, warmup=5) -> float:
  """Training examples/s of the input pipeline alone (batch 32)."""
  from momentdiff_jax.data import pipeline
  config = config_base.load_config(os.path.join(ROOT, 'configs', f'{config_name}.py'))
  it = pipeline.TrainIterator(config, data_dir, worker_count=workers)
  try:
    for _ in range(warmup):
      next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(steps):
      n += len(next(it)['index'])
    return n / (time.perf_counter() - t)
  finally:
    it.close()


def run_dataset(name, args) -> tuple:
  from momentdiff_jax.data import store
  files, dims, text_dim, clip_len, pool, config_name = SHAPES[name]
  paths = [os.path.join(args.annotations, f) if f else None for f in files]
  work = os.path.join(args.workdir, name + (f'_{args.max_rows}' if args.max_rows else ''))
  feats, out = os.path.join(work, 'features'), os.path.join(work, 'dataset')
  if not os.path.exists(os.path.join(feats, 'done')):
    shutil.rmtree(feats, ignore_errors=True)
    generate_features(feats, [p for p in paths if p], dims, text_dim, clip_len, pool,
                      max_rows=args.max_rows)
    open(os.path.join(feats, 'done'), 'w').close()
  vdirs = [os.path.join(feats, f'video{k}') for k in range(len(dims))]
  kept = os.path.join(work, 'build.json')   # figures of a build kept with --keep
  if args.keep and os.path.exists(kept) and os.path.exists(out):
    with open(kept) as f:
      figures = json.load(f)
  else:
    shutil.rmtree(out, ignore_errors=True)
    figures = build(dict(train=paths[0], val=paths[1], test=paths[2], video_dirs=vdirs,
                         text_dir=os.path.join(feats, 'text'), clip_len=clip_len,
                         pool_clips=pool, output=out, feature_dtype=args.feature_dtype,
                         max_rows=args.max_rows))
    with open(kept, 'w') as f:
      json.dump(figures, f)
  info = store.load_dataset_info(out)
  figures.update(bytes_on_disk=store.dir_bytes(out),
                 unique_feature_bytes=info['unique_feature_bytes'],
                 feature_dtype=args.feature_dtype, counts=info['counts'],
                 num_videos=info['num_videos'])
  print(f'{name}: built in {figures["build_s"]:.1f} s, peak RSS '
        f'{figures["peak_rss_bytes"] / 2**20:.0f} MiB, {figures["bytes_on_disk"] / 2**20:.1f} '
        f'MiB on disk = {figures["bytes_on_disk"] / figures["unique_feature_bytes"]:.4f} x '
        f'the unique features', flush=True)
  rates = {}
  for w in args.worker_counts:
    rates[str(w)] = round(pipeline_rate(out, config_name, w, args.steps), 1)
    print(f'{name}: worker_count {w}: {rates[str(w)]:.0f} examples/s', flush=True)
  if not args.keep:
    shutil.rmtree(out, ignore_errors=True)
  return rates, figures


def run_corpus(args) -> dict:
  """Generated corpus of N training queries: build and train peak RSS."""
  from momentdiff_jax.data import store
  n, per = args.corpus_queries, args.queries_per_video
  work = os.path.join(args.workdir, f'corpus_{n}')
  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work)
  rng = np.random.default_rng(0)
  dims, text_dim = (64,), 32
  split_sizes = {'train': n, 'val': 256, 'test': 256}
  vdir, tdir = os.path.join(work, 'video'), os.path.join(work, 'text')
  os.makedirs(vdir)
  os.makedirs(tdir)
  qid = 0
  for split, count in split_sizes.items():
    with open(os.path.join(work, f'{split}.jsonl'), 'w') as f:
      for v in range(-(-count // per)):
        vid = f'{split}{v}'
        clips = int(rng.integers(16, 64))
        np.save(os.path.join(vdir, f'{vid}.npy'),
                rng.standard_normal((clips, dims[0]), np.float32))
        for _ in range(min(per, count - v * per)):
          s = float(rng.integers(0, clips - 4))
          f.write(json.dumps({'qid': qid, 'query': 'a generated query', 'vid': vid,
                              'duration': float(clips),
                              'relevant_windows': [[s, s + 4.0]]}) + '\n')
          np.savez(os.path.join(tdir, f'qid{qid}.npz'),
                   last_hidden_state=rng.standard_normal((8, text_dim), np.float32))
          qid += 1
  out = os.path.join(work, 'dataset')
  figures = build(dict(train=os.path.join(work, 'train.jsonl'),
                       val=os.path.join(work, 'val.jsonl'),
                       test=os.path.join(work, 'test.jsonl'), video_dirs=[vdir],
                       text_dir=tdir, clip_len=1.0, output=out))
  figures.update(queries=n, bytes_on_disk=store.dir_bytes(out),
                 unique_feature_bytes=store.load_dataset_info(out)['unique_feature_bytes'])
  print(json.dumps(figures), flush=True)
  if args.train_steps > 0:
    figures.update(_train_corpus(args, work, out))
    print(json.dumps(figures), flush=True)
  if not args.keep:
    shutil.rmtree(work, ignore_errors=True)
  return figures


def _train_corpus(args, work, out) -> dict:
  """Trains `args.train_steps` steps on the corpus with main.py: its peak RSS."""
  wd = os.path.join(work, 'train')
  cmd = [sys.executable, os.path.join(ROOT, 'main.py'),
         f'--config={os.path.join(ROOT, "configs", "synthetic.py")}', f'--workdir={wd}',
         f'--config.data.dir={out}', f'--config.num_train_steps={args.train_steps}',
         '--config.data.length_buckets=(32,64)', '--config.data.max_v_l=64',
         '--config.eval_every_steps=1000000', '--config.checkpoint_every_steps=1000000']
  t = time.perf_counter()
  res = subprocess.run([sys.executable, '-c', _CHILD_TRAIN] + cmd[1:],
                       capture_output=True, text=True, check=False, env=_child_env())
  if res.returncode:
    raise RuntimeError(f'training failed: {res.stderr[-3000:]}')
  rss = json.loads(res.stderr.strip().splitlines()[-1])['peak_rss_bytes']
  return dict(train_steps=args.train_steps, train_s=time.perf_counter() - t,
              train_peak_rss_bytes=rss)


FLAGS = flags.FlagValues()
flags.DEFINE_string('output', '', 'Also write the JSON here.', flag_values=FLAGS)
flags.DEFINE_string('datasets', 'charades_sf_c,tacos', 'comma list of ' + ', '.join(SHAPES),
                    flag_values=FLAGS)
flags.DEFINE_string('annotations', os.path.join(ROOT, '..', 'shared', 'data', 'annotations'),
                    'dir of the annotation files (charades/, highlight/, tacos/)',
                    flag_values=FLAGS)
flags.DEFINE_string('workdir', '/tmp/momentdiff_input_pipeline',
                    'generated features and datasets (kept for reruns)', flag_values=FLAGS)
flags.DEFINE_string('feature_dtype', 'float32', 'stored feature dtype', flag_values=FLAGS)
flags.DEFINE_string('worker_counts', '0,1,2', 'data.worker_count values to time',
                    flag_values=FLAGS)
flags.DEFINE_integer('steps', 150, 'batches timed per setting', flag_values=FLAGS)
flags.DEFINE_bool('keep', False, 'keep the built datasets (a rerun with --keep reuses them)',
                  flag_values=FLAGS)
flags.DEFINE_integer('max_rows', 0, '> 0: only the first rows of each annotation file',
                     flag_values=FLAGS)
flags.DEFINE_integer('corpus_queries', 0, '> 0: the corpus mode (see above)',
                     flag_values=FLAGS)
flags.DEFINE_integer('queries_per_video', 10, 'queries per video of the corpus',
                     flag_values=FLAGS)
flags.DEFINE_integer('train_steps', 5, 'steps trained on the corpus (0: none)',
                     flag_values=FLAGS)


def _main():
  args = app.namespace(FLAGS)
  args.worker_counts = [int(w) for w in args.worker_counts.split(',')]
  if args.corpus_queries:
    result = {'corpus': run_corpus(args)}
  else:
    result = {'examples_per_s': {}, 'datasets': {}, 'cpu_count': os.cpu_count(),
              'batch_size': 32}
    for name in args.datasets.split(','):
      rates, figures = run_dataset(name, args)
      result['examples_per_s'][name] = rates
      result['datasets'][name] = figures
  print(json.dumps(result, indent=1))
  report.write_result(args.output, result, log=None)


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
