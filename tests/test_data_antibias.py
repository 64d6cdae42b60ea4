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
needs_shared = pytest.mark.skipif(not os.path.exists(TRAIN),
                                  reason='../shared annotations absent')
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


@needs_shared
def test_cli_prints_table_beside_authors(tmp_path):
  script = os.path.join(fx.REPO, 'data_prep', 'make_antibias_splits.py')
  r = subprocess.run([sys.executable, script, '--kind=mom', f'--train={TRAIN}',
                      f'--test={TEST}', f'--output={tmp_path}',
                      f'--reference_dir={fx.annotation("charades_mom")}'],
                     capture_output=True, text=True, check=True)
  print(r.stdout)
  assert 'train (authors)' in r.stdout and 'test (ours)' in r.stdout
  assert 'share start>15s' in r.stdout
  rows = antibias.read_rows(str(tmp_path / 'train_mom_80.jsonl'))
  assert len(rows) == AUTHORS['mom'][0]
