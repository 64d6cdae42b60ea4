"""Charades-STA-Len/Mom builder: 80/20 rules, counts vs the authors' files, table."""
import os
import subprocess
import sys

import numpy as np
import pytest

from momentdiff_jax.data import antibias
from tests import data_fixtures as fx

TRAIN = fx.annotation('charades', 'charades_sta_train_tvr_format.jsonl')
TEST = fx.annotation('charades', 'charades_sta_test_tvr_format.jsonl')
needs_shared = pytest.mark.skipif(
    not os.path.exists(TRAIN),
    reason='full Charades-STA and anti-bias annotation files (../shared/data/annotations) '
    'absent: split counts need every row; qid restoration runs on the cuts in tests/fixtures')
AUTHORS = {'len': (11633, 985), 'mom': (6662, 1297)}


def _row(qid, s, e, d=30.0):
  return {'qid': qid, 'query': 'q', 'vid': f'v{qid}', 'duration': d,
          'relevant_windows': [[s, e]]}


def test_boundaries_follow_authors_files():
  rows = [_row(0, 0, 9.9), _row(1, 5.5, 15.5), _row(2, 6.1, 16.1), _row(3, 0, 12)]
  short, long_ = antibias._groups(rows, 'len')
  # Exactly 10 s is in neither group; 16.1 - 6.1 is 10.000000000000002 -> long.
  assert short.tolist() == [True, False, False, False]
  assert long_.tolist() == [False, False, True, True]
  rows = [_row(0, 1, 14.9), _row(1, 3, 15.0), _row(2, 15.0, 20), _row(3, 15.1, 20),
          _row(4, 10, 20)]
  early, late = antibias._groups(rows, 'mom')
  assert early.tolist() == [True, False, False, False, False]
  assert late.tolist() == [False, False, False, True, False]


def test_eighty_twenty_on_toy_rows():
  rng = np.random.default_rng(0)
  rows = []
  for i in range(500):
    s = float(rng.uniform(0, 20))
    rows.append(_row(i, round(s, 1), round(s + float(rng.uniform(1, 15)), 1)))
  out = antibias.make_splits(rows, rows, 'len', seed=1)
  for split, bias_share in (('train', 0.8), ('test', 0.2)):
    short, long_ = antibias._groups(out[split], 'len')
    assert short.sum() + long_.sum() == len(out[split])
    n_all = (short if split == 'train' else long_).sum()
    assert len(out[split]) == n_all + n_all // 4
    assert abs(short.mean() - bias_share) < 0.01


@needs_shared
@pytest.mark.parametrize('kind', ['len', 'mom'])
def test_real_charades_matches_authors(kind, tmp_path):
  train, test = antibias.read_rows(TRAIN), antibias.read_rows(TEST)
  out = antibias.make_splits(train, test, kind, seed=0)
  assert (len(out['train']), len(out['test'])) == AUTHORS[kind]
  st_tr = antibias.split_stats(out['train'], kind)
  st_te = antibias.split_stats(out['test'], kind)
  assert abs(st_tr['bias_share'] - 0.8) < 1e-3 and abs(st_tr['antibias_share'] - 0.2) < 1e-3
  assert abs(st_te['bias_share'] - 0.2) < 1e-3 and abs(st_te['antibias_share'] - 0.8) < 1e-3
  # Every train pair from the original train file, every test pair from test.
  key = lambda r: r['qid']
  assert {key(r) for r in out['train']} <= {key(r) for r in train}
  assert {key(r) for r in out['test']} <= {key(r) for r in test}
  # Statistics close to the authors' files (same rules, different samples).
  ref_dir = fx.annotation(f'charades_{kind}')
  ref_tr = antibias.split_stats(antibias.read_rows(
      os.path.join(ref_dir, antibias.FILENAMES[kind][0])), kind)
  for k in ('len_mean_s', 'center_norm_mean', 'width_norm_mean'):
    assert abs(st_tr[k] - ref_tr[k]) < 0.05 * max(1.0, abs(ref_tr[k])), k
  # Seeded: same seed same files, another seed another sample.
  again = antibias.make_splits(train, test, kind, seed=0)
  assert [r['qid'] for r in again['train']] == [r['qid'] for r in out['train']]
  other = antibias.make_splits(train, test, kind, seed=1)
  assert [r['qid'] for r in other['train']] != [r['qid'] for r in out['train']]


def test_cli_writes_the_splits_and_prints_table_beside_authors(tmp_path):
  """On the Charades-STA heads in tests/fixtures; the reference dir there holds a cut
  of the authors' Mom test file only, so only its test column is shown."""
  train = fx.fixture('annotations', 'charades', 'charades_sta_train_tvr_format.jsonl')
  test = fx.fixture('annotations', 'charades', 'charades_sta_test_tvr_format.jsonl')
  script = os.path.join(fx.REPO, 'data_prep', 'make_antibias_splits.py')
  r = subprocess.run([sys.executable, script, '--kind=mom', f'--train={train}',
                      f'--test={test}', f'--output={tmp_path}', '--seed=2',
                      f'--reference_dir={fx.fixture("annotations", "charades_mom")}'],
                     capture_output=True, text=True, check=True)
  print(r.stdout)
  assert 'test (authors)' in r.stdout and 'test (ours)' in r.stdout
  assert 'train (authors)' not in r.stdout and 'share start>15s' in r.stdout
  want = antibias.make_splits(antibias.read_rows(train), antibias.read_rows(test), 'mom',
                              seed=2)
  for split in ('train', 'test'):
    got = antibias.read_rows(str(tmp_path / f'{split}_mom_80.jsonl'))
    assert got == want[split] and got


# ------------------------------------------------------------- the authors' files, own qids
def test_restore_qids_small():
  orig = [dict(_row(10, 0, 5), query='a person sits.'), dict(_row(11, 2, 9), vid='v10',
                                                              query='person atart sneezing.')]
  authors = [dict(_row(0, 0, 5), vid='v10', query='a person sits.'),
             dict(_row(0, 2, 9), vid='v10', query='person start sneezing.'),
             dict(_row(1, 1, 2), query='nothing like it.')]
  mapped, unmapped, near = antibias.restore_qids(authors, orig)
  assert [r['qid'] for r in mapped] == [10] and [l for l, _ in unmapped] == [2, 3]
  assert mapped[0] == dict(authors[0], qid=10)
  mapped, unmapped, near = antibias.restore_qids(authors, orig, near_text=0.9)
  assert [r['qid'] for r in mapped] == [10, 11] and [l for l, _ in unmapped] == [3]
  assert near == [(2, authors[1], 'person atart sneezing.')]


def test_restore_qids_on_cuts_of_the_authors_files(tmp_path):
  """tests/fixtures: the authors' test rows around their 4 retyped queries (Len line
  497, Mom lines 485, 840, 940 of the full files) and the original Charades-STA test
  rows with the same vid and windows. Exact matches map; the retyped rows map only with
  --near_text, to the original of the same vid and windows."""
  originals = antibias.read_rows(fx.fixture('annotations', 'charades',
                                            'antibias_test_originals.jsonl'))
  by_qid = {r['qid']: r for r in originals}
  for kind, n, retyped in (('len', 100, {50: 'looking in mirror,then person starts '
                                             'undressing.'}),
                           ('mom', 120, {20: 'person opened the box adn llooked in to it.',
                                         60: 'person drank from the glass,put the glass down.',
                                         100: 'person atart sneezing.'})):
    rows = antibias.read_rows(fx.fixture('annotations', f'charades_{kind}',
                                         f'test_{kind}_80.jsonl'))
    assert len(rows) == n
    mapped, unmapped, _ = antibias.restore_qids(rows, originals)
    assert len(mapped) == n - len(retyped) and [l for l, _ in unmapped] == sorted(retyped)
    mapped, unmapped, near = antibias.restore_qids(rows, originals, near_text=0.9)
    assert len(mapped) == n and not unmapped and len({r['qid'] for r in mapped}) == n
    assert {line: original_query for line, _, original_query in near} == retyped
    for r in mapped:
      o = by_qid[r['qid']]
      assert (o['vid'], o['relevant_windows']) == (r['vid'], r['relevant_windows'])
  out = tmp_path / 'test_len_80.jsonl'
  res = subprocess.run(
      [sys.executable, os.path.join(fx.REPO, 'data_prep', 'restore_antibias_qids.py'),
       f'--authors={fx.fixture("annotations", "charades_len", "test_len_80.jsonl")}',
       f'--original={fx.fixture("annotations", "charades", "antibias_test_originals.jsonl")}',
       f'--output={out}'], capture_output=True, text=True)
  assert res.returncode == 0, res.stderr
  assert '99 of 100 rows' in res.stdout and 'line 50' in res.stdout
  assert len(antibias.read_rows(str(out))) == 99


@needs_shared
def test_restore_qids_on_the_authors_files(tmp_path):
  """Exact (vid, query, windows) matches: all but 1 Len and 3 Mom test rows; those map
  with --near_text; qids come out unique and point at the same vid and windows."""
  originals = antibias.read_rows(TRAIN) + antibias.read_rows(TEST)
  by_qid = {r['qid']: r for r in originals}
  test_qids = {r['qid'] for r in antibias.read_rows(TEST)}
  expected_unmapped = {'len': (0, 1), 'mom': (0, 3)}
  for kind in ('len', 'mom'):
    for split, n, miss in zip(('train', 'test'), AUTHORS[kind], expected_unmapped[kind]):
      rows = antibias.read_rows(fx.annotation(f'charades_{kind}', f'{split}_{kind}_80.jsonl'))
      assert len({r['qid'] for r in rows}) < n      # the authors' qids repeat
      mapped, unmapped, _ = antibias.restore_qids(rows, originals)
      assert (len(mapped), len(unmapped)) == (n - miss, miss), (kind, split)
      mapped, unmapped, near = antibias.restore_qids(rows, originals, near_text=0.9)
      assert len(mapped) == n and not unmapped and len(near) == miss
      assert len({r['qid'] for r in mapped}) == n
      for r in mapped:
        o = by_qid[r['qid']]
        assert (o['vid'], o['relevant_windows']) == (r['vid'], r['relevant_windows'])
        assert (r['qid'] in test_qids) == (split == 'test')
  out = tmp_path / 'test_len_80.jsonl'
  res = subprocess.run(
      [sys.executable, os.path.join(fx.REPO, 'data_prep', 'restore_antibias_qids.py'),
       f'--authors={fx.annotation("charades_len", "test_len_80.jsonl")}',
       f'--original={TRAIN},{TEST}', f'--output={out}'], capture_output=True, text=True)
  assert res.returncode == 0, res.stderr
  assert '984 of 985 rows' in res.stdout and 'line 497' in res.stdout
  assert len(antibias.read_rows(str(out))) == 984
