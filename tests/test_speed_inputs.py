"""benchmarks/speed_inputs.py: the shipped Charades-STA lengths table and what it gives."""
import collections
import importlib.util
import json
import math
import os
import shutil

import numpy as np
import pytest

from tests import data_fixtures as fx

# A script of benchmarks/ (not a package), loaded by path.
_SPEC = importlib.util.spec_from_file_location(
    'speed_inputs', os.path.join(fx.REPO, 'benchmarks', 'speed_inputs.py'))
speed_inputs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(speed_inputs)

CHARADES = ('charades_sta_train_tvr_format.jsonl', 'charades_sta_test_tvr_format.jsonl')


def _table():
  with open(speed_inputs.TABLE, encoding='utf-8') as f:
    return json.load(f)


def test_table_loads_with_caps():
  table = _table()
  lengths = speed_inputs.load_lengths(None, 64, 10)
  assert 'benchmarks/data/charades_sta_lengths.json' in lengths['source']
  for split, rows in (('train', 12404), ('test', 3720)):   # every Charades-STA query
    assert table[split]['rows'] == rows
    assert sum(table[split]['clips'].values()) == sum(table[split]['words'].values()) == rows
    clips, q = lengths[f'{split}_clips'], lengths[f'{split}_query_len']
    assert len(clips) == len(q) == rows
    n_long = sum(c for k, c in table[split]['clips'].items() if int(k) >= 64)
    assert (clips == 64).sum() == n_long and clips.max() == 64
    n_long_q = sum(c for k, c in table[split]['words'].items() if int(k) + 2 >= 10)
    assert (q == 10).sum() == n_long_q
    assert q.min() == min(int(k) for k in table[split]['words']) + 2


def test_table_holds_the_shipped_heads(tmp_path):
  """The first 300 rows of each file (tests/fixtures) are counted in the table: each
  clip / word count of the head occurs at least as often in the table."""
  for name in CHARADES:
    shutil.copy(fx.fixture('annotations', 'charades', name), tmp_path / name)
  head = speed_inputs.length_table(str(tmp_path))
  table = _table()
  for split in ('train', 'test'):
    assert head[split]['rows'] == 300
    rows = [json.loads(l) for l in open(tmp_path / head[split]['file'])]
    want = collections.Counter(str(math.ceil(r['duration'])) for r in rows)
    assert head[split]['clips'] == dict(sorted(want.items(), key=lambda kv: int(kv[0])))
    for key in ('clips', 'words'):
      for value, count in head[split][key].items():
        assert table[split][key].get(value, 0) >= count, (split, key, value)


def test_annotation_dir_without_files_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'no \\*train\\*.jsonl annotation file in '
                     f'{tmp_path}'):
    speed_inputs.load_lengths(str(tmp_path), 200, 32)


@pytest.mark.skipif(not os.path.exists(fx.annotation('charades', CHARADES[0])),
                    reason='full Charades-STA annotation files (../shared/data/annotations) '
                    'absent; the table is checked against the shipped heads above')
def test_table_equals_the_full_annotation_files():
  full = speed_inputs.length_table(fx.annotation('charades'))
  table = _table()
  for split in ('train', 'test'):
    assert full[split] == table[split]
  got = speed_inputs.load_lengths(fx.annotation('charades'), 200, 32)
  want = speed_inputs.load_lengths(None, 200, 32)
  for key in ('train_clips', 'test_clips', 'train_query_len', 'test_query_len'):
    np.testing.assert_array_equal(np.sort(got[key]), want[key])
