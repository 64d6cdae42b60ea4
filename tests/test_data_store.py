"""The video-keyed store: each video once, exact examples, 16-bit features, old formats."""
import json
import os

import ml_dtypes
import numpy as np
import pytest

from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.data import dataset, pipeline, store
from momentdiff_jax.data.build import build_dataset
from momentdiff_jax.data.sources import DataError
from tests import data_fixtures as fx
from tests.test_data_build import _check_split_against_numpy

DIMS, TEXT_DIM = (96, 32), 24     # features dominate the bytes, as in real data


def _rows(num_videos=6, per_video=4):
  """`per_video` queries on each video (as TACoS has ~150), windows inside it."""
  rows = []
  for v in range(num_videos):
    dur = 20.0 + 3 * v
    for q in range(per_video):
      s = 1.0 + 2 * q
      rows.append({'qid': 100 * v + q, 'query': f'q{v}.{q}', 'vid': f'vid{v}',
                   'duration': dur, 'relevant_windows': [[s, s + 4.0]]})
  return rows


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('shared')
  train = fx.write_jsonl(str(tmp / 'train.jsonl'), _rows())
  # val: other queries on the training videos (stored once for both splits).
  val = fx.write_jsonl(str(tmp / 'val.jsonl'),
                       [dict(r, qid=r['qid'] + 5000) for r in _rows()])
  test = fx.write_jsonl(str(tmp / 'test.jsonl'),
                        [dict(r, qid=r['qid'] + 10000, vid='t' + r['vid'])
                         for r in _rows(3, 5)])
  vdirs, tdir = fx.make_features(str(tmp / 'feats'), [train, val, test], 1.0, dims=DIMS,
                                 text_dim=TEXT_DIM)

  def build(name, **kw):
    out = str(tmp / name)
    build_dataset(train=train, val=val, test=test, video_dirs=vdirs, text_dir=tdir,
                  clip_len=1.0, output=out, progress=False, log=lambda s: None, **kw)
    return out
  return build, vdirs, tdir


def _source_bytes(vdirs, tdir, vids, qids, itemsize=4):
  """Unique feature bytes from the source files: each video once (cut to the shortest
  type), each query's tokens."""
  total = 0
  for vid in vids:
    clips = min(len(np.load(os.path.join(d, f'{vid}.npz'))['features']) for d in vdirs)
    total += clips * sum(DIMS) * itemsize
  for q in qids:
    total += np.load(os.path.join(tdir, f'qid{q}.npz'))['last_hidden_state'].size * itemsize
  return total


def test_videos_stored_once_and_examples_exact(shared):
  build, vdirs, tdir = shared
  out = build('f32')
  info = store.load_dataset_info(out)
  # train and val query the same 6 videos: each is stored once for both splits.
  assert info['num_videos'] == 6 + 3
  assert info['counts'] == {'train': 24, 'val': 24, 'test': 15}
  offsets = np.load(os.path.join(out, 'video_offsets.npy'))
  ids = [json.loads(l) for l in open(os.path.join(out, 'video_ids.jsonl'))]
  assert len(offsets) == 10 and ids[:2] == ['vid0', 'vid1']
  # Every example equals the numpy computed from the source files.
  cfg = fx.data_config(max_v_l=64, buckets=(32, 64), max_q_l=8)
  for split in ('train', 'test'):
    _check_split_against_numpy(out, split, vdirs, tdir, 1.0, cfg)
  # Bytes on disk: the unique features plus a little bookkeeping.
  rows = [r for s in ('train', 'val', 'test') for r in store.load_rows(out, s)]
  unique = _source_bytes(vdirs, tdir, sorted({r['vid'] for r in rows}),
                         sorted({r['qid'] for r in rows}))
  assert info['unique_feature_bytes'] == unique
  on_disk = store.dir_bytes(out)
  assert unique < on_disk <= 1.1 * unique, (on_disk, unique)
  # A per-query layout would have written each video 5-8 times.
  per_query = sum(
      min(len(np.load(os.path.join(d, f'{r["vid"]}.npz'))['features']) for d in vdirs)
      * sum(DIMS) * 4 for r in rows)
  assert on_disk < 0.25 * per_query


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_16_bit_features(shared, dtype):
  """Each stored value is the float32 source rounded to nearest even (numpy for
  float16, ml_dtypes for bfloat16), bit for bit: truncating would fail here."""
  build, _, _ = shared
  ref, out = build('f32_' + dtype), build(dtype, feature_dtype=dtype)
  assert store.load_dataset_info(out)['feature_dtype'] == dtype
  videos_32 = os.path.getsize(os.path.join(ref, 'videos.npy'))
  assert os.path.getsize(os.path.join(out, 'videos.npy')) < 0.51 * videos_32
  half = {'float16': np.float16, 'bfloat16': ml_dtypes.bfloat16}[dtype]
  rounded = lambda x: x.astype(half).astype(np.float32)
  cfg = fx.data_config(max_v_l=64, buckets=(32, 64), max_q_l=8)
  cfg.data.normalize_text = False    # tokens as stored (normalizing comes after reading)
  dv = sum(DIMS)                     # then 2 TEF columns, computed at read time
  changed = 0
  for a, b in zip(pipeline.eval_batches(cfg, ref, 'test', 8),
                  pipeline.eval_batches(cfg, out, 'test', 8)):
    assert b['video_feat'].dtype == np.float32
    np.testing.assert_array_equal(b['video_feat'][..., :dv], rounded(a['video_feat'][..., :dv]))
    np.testing.assert_array_equal(b['video_feat'][..., dv:], a['video_feat'][..., dv:])
    np.testing.assert_array_equal(b['query_feat'], rounded(a['query_feat']))
    changed += int((b['video_feat'] != a['video_feat']).sum())
    for k in ('span_targets', 'saliency_labels', 'num_clips', 'index'):
      np.testing.assert_array_equal(b[k], a[k])
  assert changed > 0     # the 16-bit store did round


def test_bfloat16_decode_is_exact():
  x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
  want = x.astype(ml_dtypes.bfloat16).astype(np.float32)   # round to nearest even
  got = store.decode(store.encode_features(x, 'bfloat16', 'x'), 'bfloat16')
  np.testing.assert_array_equal(got, want)


def test_float16_overflow_names_the_file(shared, tmp_path):
  _, vdirs, _ = shared
  rows = _rows(1, 1)
  path, val, test = fx.write_splits(str(tmp_path), rows)
  _, tdir = fx.make_features(str(tmp_path / 'f'), [path, val, test], 1.0,
                             text_dim=TEXT_DIM)
  big = os.path.join(tdir, 'qid0.npz')
  np.savez(big, last_hidden_state=np.full((3, TEXT_DIM), 1e5, np.float32))
  out = str(tmp_path / 'out')
  with pytest.raises(DataError, match='qid0.npz.*overflows float16'):
    build_dataset(train=path, val=val, test=test, video_dirs=vdirs, text_dir=tdir,
                  clip_len=1.0, output=out, progress=False, log=lambda s: None,
                  feature_dtype='float16')
  assert not os.path.exists(out)
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.tmp-')]


def test_old_format_asks_for_a_rebuild(tmp_path):
  old = tmp_path / 'old'
  old.mkdir()
  (old / 'metadata.json').write_text(json.dumps(
      {'format_version': '1.0.0', 'counts': {'train': 3}, 'video_feature_dim': 4,
       'text_dim': 2}))
  (old / 'momentdiff-train.array_record-00000-of-00001').write_bytes(b'')
  c = base_config()
  c.data.dir = str(old)
  with pytest.raises(DataError, match=r'format 1\.0\.0.*Rebuild it with '
                                      r'data_prep/build_dataset.py'):
    dataset.open_dataset(c)


def test_npy_appender_matches_np_save(tmp_path):
  rows = np.arange(30, dtype=np.float32).reshape(10, 3)
  w = store.NpyAppender(str(tmp_path / 'a.npy'), np.float32, (3,))
  for k in range(0, 10, 4):
    assert w.append(rows[k:k + 4]) == k
  w.close()
  np.save(tmp_path / 'b.npy', rows)
  assert (tmp_path / 'a.npy').read_bytes() == (tmp_path / 'b.npy').read_bytes()
  rec = np.zeros(2, store.RECORD)
  rec['video'] = [3, 4]
  w = store.NpyAppender(str(tmp_path / 'r.npy'), store.RECORD)
  w.append(rec[:1])
  w.append(rec[1:])
  w.close()
  np.testing.assert_array_equal(np.load(tmp_path / 'r.npy'), rec)
