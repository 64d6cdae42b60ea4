"""Every bad input gets one clear error naming its file/row/field; nothing is left."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from momentdiff_jax.data import sources
from momentdiff_jax.data.build import build_dataset
from momentdiff_jax.data.sources import DataError
from tests import data_fixtures as fx

ROWS = [{'qid': 1, 'query': 'a', 'vid': 'v1', 'duration': 10.0,
         'relevant_windows': [[1.0, 4.0]]},
        {'qid': 2, 'query': 'b', 'vid': 'v2', 'duration': 8.0,
         'relevant_windows': [[0.0, 8.0]]},
        {'qid': 3, 'query': 'c', 'vid': 'v3', 'duration': 12.0,
         'relevant_windows': [[2.0, 3.0], [5.0, 12.0]]}]


@pytest.fixture
def setup(tmp_path):
  path, val, test = fx.write_splits(str(tmp_path), ROWS)
  vdirs, tdir = fx.make_features(str(tmp_path / 'f'), [path, val, test], 1.0)
  out = str(tmp_path / 'out')

  def build(**kw):
    args = dict(train=path, val=val, test=test, video_dirs=vdirs, text_dir=tdir,
                clip_len=1.0, output=out, progress=False, log=lambda s: None)
    args.update(kw)
    return build_dataset(**args)
  return build, path, vdirs, tdir, out, tmp_path


def _fails(build, out, match, **kw):
  with pytest.raises(DataError, match=match):
    build(**kw)
  assert not os.path.exists(out)
  # No temp dir left beside --output either.
  assert not [p for p in os.listdir(os.path.dirname(out)) if p.startswith('.tmp-')]


def test_good_build(setup):
  build, *_ = setup
  summary = build()
  assert summary['counts'] == {'train': 3, 'val': 3, 'test': 3}


def test_missing_video_file(setup):
  build, _, vdirs, _, out, _ = setup
  os.remove(os.path.join(vdirs[1], 'v2.npz'))
  _fails(build, out, r"vid 'v2' \(searched .*video1/v2.npz and .*video1/v2.npy\)")


def test_feature_dim_differs(setup):
  build, _, vdirs, _, out, _ = setup
  np.savez(os.path.join(vdirs[0], 'v3.npz'), features=np.ones((12, 7), np.float32))
  _fails(build, out, r'v3.npz: feature dim 7 differs from dim 6 of .*v1.npz')


def test_text_dim_differs(setup):
  build, _, _, tdir, out, _ = setup
  np.savez(os.path.join(tdir, 'qid3.npz'), last_hidden_state=np.ones((3, 9)))
  _fails(build, out, r'qid3.npz: text feature dim 9 differs from dim 5')


def test_malformed_jsonl_line(setup):
  build, path, _, _, out, tmp_path = setup
  bad = tmp_path / 'bad.jsonl'
  lines = open(tmp_path / 'test.jsonl').read().splitlines()
  lines[1] = lines[1][:-5]
  bad.write_text('\n'.join(lines) + '\n')
  _fails(build, out, r'bad.jsonl:2: malformed JSON line', test=str(bad))


def test_missing_field(setup):
  build, _, _, _, out, tmp_path = setup
  rows = [dict(r) for r in ROWS]
  del rows[2]['duration']
  bad = fx.write_jsonl(str(tmp_path / 'bad.jsonl'), rows)
  _fails(build, out, r"bad.jsonl:3: missing field 'duration'", train=bad)


@pytest.mark.parametrize('window,match', [
    ([5.0, 5.0], r'bad.jsonl:2: qid 2: relevant_windows entry \[5.0, 5.0\] has start >= end'),
    ([6.0, 2.0], r'qid 2: relevant_windows entry \[6.0, 2.0\] has start >= end'),
    ([1.0, 30.0], r'bad.jsonl:2: qid 2: .* outside \[0, duration=8.0\] by more than '
                  r'the tolerance 2.0'),
    ([-3.0, 2.0], r'qid 2: .* outside \[0, duration=8.0\]'),
])
def test_bad_window(setup, window, match):
  build, _, _, _, out, tmp_path = setup
  rows = [dict(r) for r in ROWS]
  rows[1]['relevant_windows'] = [window]
  bad = fx.write_jsonl(str(tmp_path / 'bad.jsonl'), rows)
  _fails(build, out, match, train=bad)


def test_window_clip_and_drop_are_counted(setup):
  build, _, _, _, out, tmp_path = setup
  rows = [dict(r) for r in ROWS]
  rows[1]['relevant_windows'] = [[0.0, 9.0]]              # 1 s past: clipped
  rows[2]['relevant_windows'] = [[2.0, 3.0], [5.0, 40.0]]  # far past: drop
  bad = fx.write_jsonl(str(tmp_path / 'bad.jsonl'), rows)
  summary = build(train=bad, on_bad_window='drop')
  assert summary['checks'] == {'train_windows_clipped': 1, 'train_windows_dropped': 1}


def test_empty_query_feature(setup):
  build, _, _, tdir, out, _ = setup
  np.savez(os.path.join(tdir, 'qid2.npz'), last_hidden_state=np.zeros((0, 5)))
  _fails(build, out, r'qid2.npz: empty or malformed query feature .*shape \(0, 5\) '
         r'for qid 2')


def test_nan_in_features(setup):
  build, _, vdirs, tdir, out, _ = setup
  x = np.load(os.path.join(vdirs[1], 'v3.npz'))['features']
  x[4, 2] = np.nan
  np.savez(os.path.join(vdirs[1], 'v3.npz'), features=x)
  _fails(build, out, r'video1/v3.npz: video features contain NaN/Inf \(first at '
         r'index \(4, 2\)\)')
  x[4, 2] = 0
  np.savez(os.path.join(vdirs[1], 'v3.npz'), features=x)
  q = np.load(os.path.join(tdir, 'qid1.npz'))['last_hidden_state']
  q[0, 0] = np.inf
  np.savez(os.path.join(tdir, 'qid1.npz'), last_hidden_state=q)
  _fails(build, out, r'qid1.npz: query features contain NaN/Inf')


def test_duration_disagrees_with_clips(setup):
  build, _, _, _, out, tmp_path = setup
  rows = [dict(r) for r in ROWS]
  rows[0]['duration'] = 13.0      # v1 has 10 clips of 1 s
  rows[0]['relevant_windows'] = [[1.0, 4.0]]
  bad = fx.write_jsonl(str(tmp_path / 'bad.jsonl'), rows)
  _fails(build, out, r"bad.jsonl:1 .*vid 'v1' has 10 clips x clip_len 1.0 = 10.00 s "
         r'but the annotation \(qid 1\) says duration 13.0 s', train=bad)


def test_cli_reports_error_and_leaves_nothing(setup):
  _, path, vdirs, tdir, out, _ = setup
  os.remove(os.path.join(vdirs[0], 'v1.npz'))
  script = os.path.join(fx.REPO, 'data_prep', 'build_dataset.py')
  test = os.path.join(os.path.dirname(path), 'test.jsonl')
  r = subprocess.run([sys.executable, script, f'--train={path}', f'--test={test}',
                      f'--video_features={",".join(vdirs)}', f'--text_features={tdir}',
                      '--clip_len=1', f'--output={out}'],
                     capture_output=True, text=True, check=False)
  assert r.returncode == 1 and "vid 'v1'" in r.stderr
  assert not os.path.exists(out)


def _truncate(path, keep=0.5):
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:int(len(data) * keep)])


@pytest.mark.parametrize('which,complaint', [
    ('video0/v2.npz', 'BadZipFile'), ('text/qid1002.npz', 'BadZipFile'),
    ('video1/v3.npy', 'ValueError')])
def test_truncated_feature_file(setup, which, complaint):
  build, _, vdirs, tdir, out, tmp_path = setup
  path = os.path.join(tmp_path, 'f', which)
  if path.endswith('.npy'):
    np.save(path, np.load(path[:-4] + '.npz')['features'])
    os.remove(path[:-4] + '.npz')
  _truncate(path)
  _fails(build, out, rf'{path}: cannot read this feature file \({complaint}: .*\); it is '
         'truncated or not a NumPy')


def test_cli_names_a_corrupt_file(setup):
  _, path, vdirs, tdir, out, tmp_path = setup
  _truncate(os.path.join(vdirs[0], 'v1.npz'))
  script = os.path.join(fx.REPO, 'data_prep', 'build_dataset.py')
  r = subprocess.run([sys.executable, script, f'--train={path}',
                      f'--test={tmp_path / "test.jsonl"}', f'--video_features={",".join(vdirs)}',
                      f'--text_features={tdir}', '--clip_len=1', f'--output={out}'],
                     capture_output=True, text=True, check=False)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  assert os.path.join(vdirs[0], 'v1.npz') in r.stderr and 'BadZipFile' in r.stderr
  assert not os.path.exists(out)


def test_qid_in_two_splits(setup):
  """A training row appended to the test file: refused, naming the qid, files, lines."""
  build, path, _, tdir, out, tmp_path = setup
  test = tmp_path / 'test.jsonl'
  with open(test, 'a') as f:
    f.write(open(path).read().splitlines()[1] + '\n')
  _fails(build, out, rf"1 queries appear in two splits.*qid 2 in train \({path}:2\) and "
         rf"test \({test}:4\)")
  # The same with an own val file: a test row in val.
  rows = [dict(r, qid=r['qid'] + 1000) for r in ROWS] + [dict(ROWS[0], qid=2001)]
  val = fx.write_jsonl(str(tmp_path / 'val2.jsonl'), rows)
  fx.make_features(str(tmp_path / 'f'), [val], 1.0)
  _fails(build, out, r'qid 2001 in val \(.*val2.jsonl:4\) and test \(.*test.jsonl:1\)',
         val=val, test=str(tmp_path / 'test.jsonl'))


def test_qid_key_collisions_are_confirmed_on_real_qids(setup, monkeypatch):
  """Every qid hashed to one key (as a 64-bit collision would): no false repeat or
  leak is reported, and a real repeat is still found by its real qid."""
  from momentdiff_jax.data import checks
  build, _, _, _, out, tmp_path = setup
  monkeypatch.setattr(checks, 'qid_key', lambda qid: 0)
  assert build()['counts'] == {'train': 3, 'val': 3, 'test': 3}
  shutil.rmtree(out)
  rows = ROWS + [dict(ROWS[1], query='b again')]
  train = fx.write_jsonl(str(tmp_path / 'rep.jsonl'), rows)
  _fails(build, out, r'rep.jsonl:4: qid 2.*line 2', train=train)


def test_duplicate_rows_within_a_split(setup):
  build, _, _, _, out, tmp_path = setup
  rows = ROWS + [dict(ROWS[0], qid=7), dict(ROWS[2], qid=8), dict(ROWS[0], qid=9)]
  train = fx.write_jsonl(str(tmp_path / 'dup.jsonl'), rows)
  fx.make_features(str(tmp_path / 'f'), [train], 1.0)
  logs = []
  summary = build(train=train, log=logs.append)
  assert summary['checks'] == {'train_duplicate_rows': 3}
  assert summary['counts']['train'] == 6      # reported, kept as in the source
  note = [l for l in logs if 'repeat an earlier row' in l]
  assert len(note) == 1 and note[0].startswith('Note: 3 train rows')
  assert f'qid 7 = qid 1 ({train}:4), qid 8 = qid 3 ({train}:5), qid 9 = qid 1' in note[0]
  # A row copied whole (qid included) is an error: text features are looked up by qid.
  shutil.rmtree(out)
  whole = fx.write_jsonl(str(tmp_path / 'whole.jsonl'), ROWS + [ROWS[1]])
  _fails(build, out, r'whole.jsonl:4: qid 2: this row is an exact copy of line 2',
         train=whole)


def test_avg_pool_matches_release_rule():
  x = np.arange(10, dtype=np.float32)[:, None]
  # Release rule: edges round(i * 10 / 5) clamped to 9, so the last bin is clip 8.
  np.testing.assert_allclose(sources.avg_pool_clips(x, 5)[:, 0], [0.5, 2.5, 4.5, 6.5, 8])
  up = sources.avg_pool_clips(x[:3], 5)[:, 0]      # upsampling repeats clips
  np.testing.assert_allclose(up, [0, 0, 1, 1, 2])
