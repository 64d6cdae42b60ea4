"""Inputs of benchmarks/speed.py: Charades-STA lengths, bucket shares, random batches.

The lengths come from a table shipped with the repository
(`benchmarks/data/charades_sta_lengths.json`: per split, how many queries have each
clip count and each word count), so a clone without the annotation files measures the
same mix. Rewrite it from the annotation files with
  python benchmarks/speed_inputs.py --annotations=DIR/charades --write_table=PATH
"""
import collections
import glob
import json
import os
import sys

from absl import flags
import numpy as np

from momentdiff_jax.common import app
from momentdiff_jax.data import pipeline

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data',
                     'charades_sta_lengths.json')


def read_rows(annotation_dir: str, split: str) -> tuple:
  """(file name, rows in file order) of the first `*{split}*.jsonl` in `annotation_dir`."""
  files = sorted(glob.glob(os.path.join(annotation_dir, f'*{split}*.jsonl')))
  if not files:
    raise FileNotFoundError(f'no *{split}*.jsonl annotation file in {annotation_dir}')
  with open(files[0], encoding='utf-8') as f:
    return os.path.basename(files[0]), [json.loads(l) for l in f if l.strip()]


def length_table(annotation_dir: str) -> dict:
  """{split: {'rows', 'clips': {n: count}, 'words': {n: count}}} of the Charades-STA
  files `*train*.jsonl` / `*test*.jsonl` in `annotation_dir`: clips = ceil(duration)
  at 1 clip/s (uncapped), words = whitespace-separated words of the query."""
  out = {}
  for split in ('train', 'test'):
    name, rows = read_rows(annotation_dir, split)
    clips = collections.Counter(int(np.ceil(float(r['duration']))) for r in rows)
    words = collections.Counter(len(r['query'].split()) for r in rows)
    out[split] = {'file': name, 'rows': len(rows),
                  'clips': {str(k): clips[k] for k in sorted(clips)},
                  'words': {str(k): words[k] for k in sorted(words)}}
  return out


def _expand(hist: dict) -> np.ndarray:
  """{value: count} -> the values, each repeated `count` times, ascending."""
  keys = sorted(hist, key=int)
  return np.repeat(np.array([int(k) for k in keys], np.int64),
                   np.array([int(hist[k]) for k in keys], np.int64))


def load_lengths(annotation_dir, max_v_l: int, max_q_l: int) -> dict:
  """Clip counts (1 clip/s, capped at `max_v_l`) and query token counts (words + 2,
  capped at `max_q_l`) per split: from the shipped table, or from the Charades-STA
  annotation files in `annotation_dir` when given (an error if it has none)."""
  if annotation_dir:
    table = length_table(annotation_dir)
    # Named by folder, not absolute path: results are shared between machines.
    source = 'Charades-STA annotations (' + '/'.join(
        os.path.normpath(annotation_dir).split(os.sep)[-3:]) + ')'
  else:
    with open(TABLE, encoding='utf-8') as f:
      table = json.load(f)
    source = 'Charades-STA lengths table (benchmarks/data/' + os.path.basename(TABLE) + ')'
  res = {'source': source}
  for split in ('train', 'test'):
    res[f'{split}_clips'] = np.minimum(_expand(table[split]['clips']), max_v_l)
    res[f'{split}_query_len'] = np.minimum(_expand(table[split]['words']) + 2, max_q_l)
  return res


def _shares(bucket_ids, buckets, min_share):
  counts = np.bincount(bucket_ids, minlength=len(buckets)) / len(bucket_ids)
  keep = {int(buckets[b]): float(c) for b, c in enumerate(counts) if c >= min_share}
  total = sum(keep.values())
  return {k: v / total for k, v in keep.items()}


def train_mix(lengths, config, batch_size: int, min_share: float):
  """{bucket length: share of training batches} of one epoch of the pipeline's plan,
  and the mean padded length over all its batches."""
  buckets = sorted(config.data.length_buckets)
  ids = pipeline.bucket_of(lengths['train_clips'], buckets)
  plan = pipeline.epoch_plan(ids, np.arange(len(ids)), batch_size, 0, 0, len(buckets))
  batch_buckets = np.array([b for b, _ in plan])
  mean_padded = float(np.mean(np.asarray(buckets)[batch_buckets]))
  return _shares(batch_buckets, buckets, min_share), mean_padded


def infer_mix(lengths, config, batch_size: int, min_share: float):
  """{bucket length: share of inference batches} of the eval plan on the test split."""
  buckets = sorted(config.data.length_buckets)
  ids = np.sort(pipeline.bucket_of(lengths['test_clips'], buckets))
  n = -(-len(ids) // batch_size)
  batch_buckets = np.array([ids[k * batch_size:(k + 1) * batch_size].max() for k in range(n)])
  return _shares(batch_buckets, buckets, min_share)


def _pick(rng, clips, lv, buckets, n):
  """`n` clip counts of videos that land in bucket `lv` (the longest ones otherwise)."""
  lo = max([b for b in buckets if b < lv], default=0)
  pool = clips[(clips > lo) & (clips <= lv)]
  if len(pool) == 0:
    pool = np.array([lv])
  return rng.choice(pool, n)


def _features(rng, b, lv, num_clips, q_lens, dv, dt, lq):
  vmask = (np.arange(lv)[None] < num_clips[:, None]).astype(np.float32)
  qmask = (np.arange(lq)[None] < q_lens[:, None]).astype(np.float32)
  vf = rng.standard_normal((b, lv, dv), np.float32) * vmask[..., None]
  qf = rng.standard_normal((b, lq, dt), np.float32) * qmask[..., None]
  return vf, vmask, qf, qmask


def infer_batch(rng, b, lv, lengths, dv=2818, dt=512, lq=32, buckets=(32, 64, 96, 128, 200)):
  num_clips = _pick(rng, lengths['test_clips'], lv, buckets, b)
  q_lens = rng.choice(lengths['test_query_len'], b)
  vf, vm, qf, qm = _features(rng, b, lv, num_clips, q_lens, dv, dt, lq)
  return {'video_feat': vf, 'video_mask': vm, 'query_feat': qf, 'query_mask': qm}


def train_batch(rng, b, lv, lengths, config, dv=2818, dt=512):
  """A training batch of the pipeline's layout (docs/DESIGN.md), one GT window each."""
  lq, m = config.data.max_q_l, config.data.max_windows
  num_clips = _pick(rng, lengths['train_clips'], lv, sorted(config.data.length_buckets), b)
  q_lens = rng.choice(lengths['train_query_len'], b)
  vf, vm, qf, qm = _features(rng, b, lv, num_clips, q_lens, dv, dt, lq)
  st = (rng.uniform(0, 0.7, b) * num_clips).astype(np.int64)
  ed = np.minimum(st + np.maximum((rng.uniform(0.1, 0.4, b) * num_clips).astype(np.int64), 1),
                  num_clips)
  spans = np.zeros((b, m, 2), np.float32)
  spans[:, 0, 0] = (st + ed) / 2 / num_clips
  spans[:, 0, 1] = (ed - st) / num_clips
  span_mask = np.zeros((b, m), np.float32)
  span_mask[:, 0] = 1
  idx = np.arange(lv)[None]
  labels = ((idx >= st[:, None]) & (idx < ed[:, None])).astype(np.float32)
  p = config.data.num_saliency_pairs
  pos = st[:, None] + (rng.uniform(size=(b, p)) * (ed - st)[:, None]).astype(np.int64)
  neg = (rng.uniform(size=(b, p)) * num_clips[:, None]).astype(np.int64)
  # Negatives inside the window move to the first or last clip.
  neg = np.where((neg >= st[:, None]) & (neg < ed[:, None]),
                 np.where(st[:, None] > 0, 0, num_clips[:, None] - 1), neg)
  return {'video_feat': vf, 'video_mask': vm, 'query_feat': qf, 'query_mask': qm,
          'span_targets': spans, 'span_mask': span_mask, 'saliency_labels': labels,
          'saliency_pos_idx': pos.astype(np.int32), 'saliency_neg_idx': neg.astype(np.int32),
          'example_mask': np.ones((b,), np.float32)}


FLAGS = flags.FlagValues()
flags.DEFINE_string('annotations', None, 'dir of charades_sta_{train,test}_tvr_format.jsonl',
                    required=True, flag_values=FLAGS)
flags.DEFINE_string('write_table', TABLE, 'the lengths table to write', flag_values=FLAGS)


def _main():
  args = app.namespace(FLAGS)
  table = length_table(args.annotations)
  table = {'about': 'Charades-STA (Moment-DETR format) queries per clip count '
                    '(ceil(duration), 1 clip/s) and per query word count; counts derived '
                    'from annotations under CC BY-NC-SA 4.0 (tests/fixtures/annotations/'
                    'LICENSE). Written by benchmarks/speed_inputs.py.', **table}
  tmp = args.write_table + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(table, f, indent=1)
    f.write('\n')
  os.replace(tmp, args.write_table)
  print(f'wrote {args.write_table}: ' + ', '.join(
      f'{s} {table[s]["rows"]} rows' for s in ('train', 'test')))



def main(argv=None) -> int:
  """Writes the Charades-STA lengths table from the annotation files."""
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
