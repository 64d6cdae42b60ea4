"""benchmarks/accuracy.py: its summaries, the oracle line, the configs it loads."""
import importlib.util
import json
import os

import pytest

from tests import data_fixtures as fx

# A script of benchmarks/ (not a package), loaded by path.
_SPEC = importlib.util.spec_from_file_location(
    'accuracy', os.path.join(fx.REPO, 'benchmarks', 'accuracy.py'))
accuracy = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(accuracy)


def test_summarize_mean_std_worst():
  seeds = [{'MR-full-R1@0.5': 50.0, 'MR-full-R1@0.7': 30.0, 'MR-full-mAP': 20.0},
           {'MR-full-R1@0.5': 60.0, 'MR-full-R1@0.7': 40.0, 'MR-full-mAP': 30.0},
           {'MR-full-R1@0.5': 70.0, 'MR-full-R1@0.7': 20.0, 'MR-full-mAP': 25.0}]
  s = accuracy.summarize(seeds)
  assert s['MR-full-R1@0.5'] == {'mean': 60.0, 'std': 10.0, 'worst': 50.0,
                                 'seeds': [50.0, 60.0, 70.0]}
  assert s['MR-full-R1@0.7']['worst'] == 20.0 and s['MR-full-mAP']['mean'] == 25.0


def test_per_seed_briefs_reads_replica_keys():
  final = {f'r{i}/final_test/{k}': float(i) for i in range(2) for k in accuracy.KEYS}
  assert [b['MR-full-mAP'] for b in accuracy.per_seed_briefs(final, 'test', 2)] == [0.0, 1.0]
  one = {f'final_val/{k}': 3.0 for k in accuracy.KEYS}
  assert accuracy.per_seed_briefs(one, 'val', 1) == [{k: 3.0 for k in accuracy.KEYS}]


def test_oracle_scores_from_a_dataset_dir(tmp_path):
  rows = [{'qid': 1, 'vid': 'a', 'duration': 10.0, 'relevant_windows': [[2.0, 6.0]]},
          {'qid': 2, 'vid': 'b', 'duration': 10.0, 'relevant_windows': [[0.0, 4.0]]}]
  preds = [{'qid': 1, 'pred_relevant_windows': [[2.0, 6.0, 1.0]]},
           {'qid': 2, 'pred_relevant_windows': [[5.0, 9.0, 1.0]]}]
  (tmp_path / 'test_rows.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  (tmp_path / 'oracle_test_preds.jsonl').write_text(
      ''.join(json.dumps(p) + '\n' for p in preds))
  got = accuracy.oracle_scores(str(tmp_path), 'test', 'mdbench_v1')
  assert got['MR-full-R1@0.5'] == 50.0 and got['MR-full-R1@0.7'] == 50.0
  assert accuracy.oracle_scores(str(tmp_path), 'val', 'mdbench_v1') is None


@pytest.mark.parametrize('data', ['mdbench_v1', 'mdbench_v2', 'synthetic'])
def test_base_config(data):
  c = accuracy.base_config(data)
  assert c.data.name == data and c.recipe == 'release'
