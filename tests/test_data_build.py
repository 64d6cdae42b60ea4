"""Building from real annotation heads (tests/fixtures) + generated features; loaded == numpy."""
import json
import os

import numpy as np

from momentdiff_jax.data import pipeline, store
from momentdiff_jax.data.build import build_dataset
from tests import data_fixtures as fx

CHARADES_ROWS, QVH_ROWS = 300, 200      # the heads shipped under tests/fixtures


def _build(tmp_path, train, test, clip_len, val=None, **kw):
  files = [p for p in (train, val, test) if p]
  vdirs, tdir = fx.make_features(str(tmp_path / 'feats'), files, clip_len)
  out = str(tmp_path / 'ds')
  logs = []
  summary = build_dataset(train=train, val=val, test=test, video_dirs=vdirs,
                          text_dir=tdir, clip_len=clip_len, output=out,
                          progress=False, log=logs.append, **kw)
  return out, vdirs, tdir, summary, logs


def _direct(row, vdirs, tdir, clip_len, cfg):
  """The expected example, computed straight from the source files."""
  parts = [np.load(os.path.join(d, f'{row["vid"]}.npz'))['features'] for d in vdirs]
  parts = [p / (np.linalg.norm(p, axis=1, keepdims=True) + 1e-5) for p in parts]
  n = min(len(p) for p in parts)
  video = np.concatenate([p[:n] for p in parts], 1)
  tef = np.stack([np.arange(n) / n, np.arange(n) / n + 1 / n], 1)
  video = np.concatenate([video, tef], 1)
  q = np.load(os.path.join(tdir, f'qid{row["qid"]}.npz'))['last_hidden_state']
  q = q[:cfg.data.max_q_l]
  q = q / (np.linalg.norm(q, axis=1, keepdims=True) + 1e-5)
  w = np.clip(np.asarray(row['relevant_windows'], np.float64)[:cfg.data.max_windows]
              / (n * clip_len), 0, 1)
  spans = np.stack([(w[:, 0] + w[:, 1]) / 2, w[:, 1] - w[:, 0]], 1)
  s, e = row['relevant_windows'][0]
  st, ed = int(s / clip_len), max(0, min(int(e / clip_len), n) - 1)
  labels = np.zeros(n)
  labels[min(st, ed):ed + 1] = 1
  return video, q, spans, labels


def _check_split_against_numpy(out, split, vdirs, tdir, clip_len, cfg):
  rows = store.load_rows(out, split)
  seen = 0
  for b in pipeline.eval_batches(cfg, out, split, 16):
    for i in np.flatnonzero(b['example_mask']):
      row = rows[b['index'][i]]
      video, q, spans, labels = _direct(row, vdirs, tdir, clip_len, cfg)
      n, nq, w = len(video), len(q), len(spans)
      assert b['num_clips'][i] == n and b['video_mask'][i].sum() == n
      np.testing.assert_allclose(b['video_feat'][i, :n], video, rtol=1e-5, atol=1e-6)
      assert not b['video_feat'][i, n:].any()
      np.testing.assert_allclose(b['query_feat'][i, :nq], q, rtol=1e-5, atol=1e-6)
      assert b['query_mask'][i].sum() == nq
      np.testing.assert_allclose(b['span_targets'][i, :w], spans, atol=1e-5)
      assert b['span_mask'][i].sum() == w
      np.testing.assert_array_equal(b['saliency_labels'][i, :n], labels)
      assert np.all(labels[b['saliency_pos_idx'][i]] == 1)
      assert b['duration'][i] == np.float32(row['duration'])
      np.testing.assert_allclose(b['span_seconds'][i], n * clip_len, rtol=1e-6)
      seen += 1
  assert seen == len(rows)


def test_charades_head(tmp_path):
  train = fx.fixture('annotations', 'charades', 'charades_sta_train_tvr_format.jsonl')
  test = fx.fixture('annotations', 'charades', 'charades_sta_test_tvr_format.jsonl')
  n_rows = CHARADES_ROWS
  out, vdirs, tdir, summary, logs = _build(tmp_path, train, test, 1.0, seed=3)
  info = store.load_dataset_info(out)
  counts = info['counts']
  assert counts['train'] + counts['val'] == n_rows and counts['test'] == n_rows
  assert any('val split' in l for l in logs)        # the log says val came from train
  train_vids = {r['vid'] for r in store.load_rows(out, 'train')}
  val_vids = {r['vid'] for r in store.load_rows(out, 'val')}
  assert train_vids and val_vids and not train_vids & val_vids   # split by video
  assert info['video_feature_dim'] == sum(fx.DIMS) and info['video_dim'] == 12
  assert info['text_dim'] == fx.TEXT_DIM and info['clip_len'] == 1.0
  assert info['sources']['video_features'] == [os.path.abspath(d) for d in vdirs]
  from momentdiff_jax.release import video_sources  # what a run records as its source order
  assert video_sources.dataset_sources(info) == (['video0', 'video1'], list(fx.DIMS))
  assert summary['length_stats']['test_clips']['max'] <= 128
  # Plain .npy files: readable with numpy alone.
  assert np.load(os.path.join(out, 'test_records.npy')).shape == (n_rows,)
  assert np.load(os.path.join(out, 'videos.npy')).shape[1] == sum(fx.DIMS)
  cfg = fx.data_config(max_v_l=200, buckets=(32, 64, 128, 200))
  _check_split_against_numpy(out, 'test', vdirs, tdir, 1.0, cfg)


def test_qvhighlights_head(tmp_path):
  train = fx.fixture('annotations', 'highlight', 'highlight_train_release.jsonl')
  val = fx.fixture('annotations', 'highlight', 'highlight_val_release.jsonl')
  test = fx.fixture('annotations', 'highlight', 'highlight_test_release.jsonl')
  n_rows = QVH_ROWS
  out, vdirs, tdir, _, _ = _build(tmp_path, train, test, 2.0, val=val)
  info = store.load_dataset_info(out)
  assert info['counts'] == {'train': n_rows, 'val': n_rows, 'test': n_rows}
  assert not info['val_from_train']
  cfg = fx.data_config(max_v_l=75, buckets=(75,))
  _check_split_against_numpy(out, 'val', vdirs, tdir, 2.0, cfg)
  # Several windows per query are kept (up to max_windows).
  rows = store.load_rows(out, 'val')
  multi = [i for i, r in enumerate(rows) if len(r['relevant_windows']) > 1]
  assert multi
  # The unlabelled test release: no targets, still one prediction slot per row.
  n_test = 0
  for b in pipeline.eval_batches(cfg, out, 'test', 32):
    assert not b['span_mask'].any() and not b['saliency_labels'].any()
    n_test += int(b['example_mask'].sum())
  assert n_test == n_rows
  # Raw rows keep the QVHighlights fields for metrics.
  assert 'saliency_scores' in rows[0] and 'relevant_clip_ids' in rows[0]


def test_truncation_and_pooling(tmp_path):
  """max_v_l cuts long videos; pooled (C3D) data spans the duration."""
  rows = [{'qid': 1, 'query': 'a', 'vid': 'v1', 'duration': 40.0,
           'relevant_windows': [[5.0, 10.0], [35.0, 39.0]]},
          {'qid': 2, 'query': 'b', 'vid': 'v1', 'duration': 40.0,
           'relevant_windows': [[33.0, 38.0]]},
          {'qid': 3, 'query': 'c', 'vid': 'v2', 'duration': 12.0,
           'relevant_windows': [[0.0, 12.0]]}]
  train, val, test = fx.write_splits(str(tmp_path), rows)
  out, _, _, _, _ = _build(tmp_path, train, test, 1.0, val=val)
  cfg = fx.data_config(max_v_l=30, buckets=(16, 32), max_windows=5)
  cfg.batch_size = 1
  it = pipeline.TrainIterator(cfg, out)
  assert it.num_skipped == 1 and it.steps_per_epoch == 2   # qid 2 lies past clip 30
  b = {int(r['index'][0]): r for r in (next(it), next(it))}
  idx = [r['qid'] for r in store.load_rows(out, 'train')].index(1)
  r = b[idx]
  assert r['num_clips'][0] == 30 and r['video_feat'].shape[1] == 32
  assert r['span_mask'][0].sum() == 1   # the window at 35 s is past the cut
  np.testing.assert_allclose(r['span_targets'][0, 0], [7.5 / 30, 5 / 30], rtol=1e-6)
  # Pooled: every video has `pool` clips and spans its duration.
  out2 = str(tmp_path / 'pooled')
  vdirs, tdir = fx.make_features(str(tmp_path / 'feats'), [train, val, test], 1.0)
  build_dataset(train=train, val=val, test=test, video_dirs=vdirs, text_dir=tdir,
                clip_len=1.0, pool_clips=10, output=out2, progress=False,
                log=lambda s: None)
  b = next(pipeline.eval_batches(fx.data_config(buckets=(16,)), out2, 'test', 3))
  assert set(b['num_clips']) == {10}
  np.testing.assert_allclose(sorted(b['span_seconds']), [12, 40, 40])
  assert json.load(open(os.path.join(out2, 'metadata.json')))['clip_len'] is None
