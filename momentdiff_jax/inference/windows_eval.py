"""Sliding windows over a dataset split: the long videos of `evaluate.py` / training's
evaluations (docs/long_videos.md).

The split's ordinary eval batches cut a video to its first `data.max_v_l` clips;
`predict_long` predicts every example whose video is longer again through windows:
the windows of all such examples, flattened, fill global batches of `eval_batch_size`
rows of `max_v_l` clips (the bucket program the eval batches already compiled), each
process loading its `data_shard` slice as `eval_batches` does; outputs are gathered
to every process and merged per example on the host (`windows.merge_windows`).
"""
import types

import jax
import numpy as np
from jax.experimental import multihost_utils

from momentdiff_jax.data import examples as ex_lib
from momentdiff_jax.data import store
from momentdiff_jax.inference import windows as windows_lib
from momentdiff_jax.run import mesh as mesh_lib

# Folded into the evaluation key, then the batch number: keys apart from eval batches'.
_TAG = 0x77696e64


def window_plan(records: np.ndarray, s: windows_lib.Settings):
  """(example index (R,), window start (R,)) of every window of the examples whose
  stored video is longer than `s.size` clips, example by example."""
  idx, starts = [], []
  if not s.enabled:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  for i in np.flatnonzero(records['num_clips'] > s.size):
    st = windows_lib.window_starts(int(records['num_clips'][i]), s.size, s.overlap)
    idx.append(np.full(len(st), i))
    starts.append(st)
  if not idx:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(idx), np.concatenate(starts)


def _load(reader, records, idx, starts, size: int, length: int, data_cfg) -> dict:
  """Windows (example idx, first clip) -> model inputs (B, length, Dv[+2]), as
  `examples.gather_features` makes a batch of `size`-clip videos (TEF per window)."""
  rec = records[idx]
  b, lq = len(idx), data_cfg.max_q_l
  part = {'video_mask': np.zeros((b, length), np.float32),
          'query_mask': np.zeros((b, lq), np.float32),
          'num_clips': np.full(b, size, np.int32),
          '_video_start': reader.video_offsets[rec['video']] + starts,
          '_text_start': rec['text_start'].astype(np.int64)}
  part['video_mask'][:, :size] = 1.0
  for j, n in enumerate(np.minimum(rec['text_len'], lq)):
    part['query_mask'][j, :n] = 1.0
  return ex_lib.gather_features(reader, part, data_cfg)


def predict_long(sample_fn, params, config, data_dir: str, split: str, mesh, rngs,
                 round_to: float) -> list:
  """Sliding-window predictions of the split's long examples.

  `sample_fn`, `params` and `rngs` (R,) as `evaluation.predict_split` takes them.
  Returns, per replica, {example index: (ranked windows, saliency list of the video's
  clips)}; empty when no video is longer than `data.max_v_l` or sliding windows are
  off.
  """
  s = windows_lib.settings(config)
  n_rep = len(rngs)
  reader = store.SplitReader(data_dir, split)
  records = reader.records
  idx, starts = window_plan(records, s)
  results = [{} for _ in range(n_rep)]
  if not len(idx):
    return results
  data_cfg = types.SimpleNamespace(**config.data.to_dict())
  buckets = sorted(int(b) for b in config.data.length_buckets)
  length = next((b for b in buckets if b >= s.size), -(-s.size // buckets[-1]) * buckets[-1])
  bsz = int(config.eval_batch_size)
  shard, num_shards = mesh_lib.data_shard(mesh)
  local = bsz // num_shards
  n_batches = -(-len(idx) // bsz)
  fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))   # every replica's key
  key = fold(rngs, _TAG)
  outs = []
  for i in range(n_batches):
    rows = np.arange(i * bsz, (i + 1) * bsz)
    mine = np.minimum(rows[shard * local:(shard + 1) * local], len(idx) - 1)  # pad: last
    batch = mesh_lib.global_batch(
        {k: v for k, v in _load(reader, records, idx[mine], starts[mine], s.size, length,
                                data_cfg).items()
         if k in ('video_feat', 'video_mask', 'query_feat', 'query_mask')}, mesh)
    out = sample_fn(params, batch['video_feat'], batch['video_mask'], batch['query_feat'],
                    batch['query_mask'], fold(key, i))
    out = {k: out[k] for k in ('spans', 'scores', 'saliency')}
    outs.append(jax.tree.map(np.asarray, multihost_utils.process_allgather(out, tiled=True)))
  out = {k: np.concatenate([o[k] for o in outs], axis=1)[:, :len(idx)] for k in outs[0]}
  for i in np.unique(idx):
    rows = np.flatnonzero(idx == i)
    rec = records[i]
    n = int(rec['num_clips'])
    clip_len = float(rec['time_scale']) / n
    for r in range(n_rep):
      sal = windows_lib.merge_saliency(out['saliency'][r, rows, :s.size], starts[rows], n)
      wins = windows_lib.merge_windows(out['spans'][r, rows], out['scores'][r, rows],
                                       starts[rows], s.size, clip_len, float(rec['duration']),
                                       config.max_pred_windows, s, round_to, sal)
      results[r][int(i)] = (wins, sal.round(4).tolist())
  return results
