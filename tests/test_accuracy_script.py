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
with pytest.MonkeyPatch.context() as _mp:   # its sibling `report`, as `python benchmarks/x.py`
  _mp.syspath_prepend(os.path.join(fx.REPO, 'benchmarks'))
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


_TSPEC = importlib.util.spec_from_file_location(
    'recipe_table', os.path.join(fx.REPO, 'benchmarks', 'recipe_table.py'))
recipe_table = importlib.util.module_from_spec(_TSPEC)
_TSPEC.loader.exec_module(recipe_table)


def test_recipe_table_rows_come_from_the_json(tmp_path, capsys):
  """The table's figures are the JSON's, variant rows included; the oracle row once."""
  def summ(a, b, c, worst):
    return {'MR-full-R1@0.5': {'mean': a, 'std': 1.0, 'worst': worst},
            'MR-full-R1@0.7': {'mean': b, 'std': 2.0, 'worst': b},
            'MR-full-mAP': {'mean': c, 'std': 0.5, 'worst': c}}
  oracle = {'MR-full-R1@0.5': 80.0, 'MR-full-R1@0.7': 60.0, 'MR-full-mAP': 50.0}
  base = {'data': 'mdbench_v1', 'oracle_test': oracle, 'num_seeds': 3}
  runs = {'release': dict(base, recipe='release', command='python benchmarks/accuracy.py '
                          '--recipe=release', test=summ(40.0, 20.0, 15.0, 38.5),
                          val=summ(41.0, 21.0, 16.0, 40.0),
                          variants={'draws': {'test': summ(42.0, 23.0, 17.0, 41.0),
                                              'val': summ(43.0, 24.0, 18.0, 42.0)}}),
          'plus': dict(base, recipe='plus', command='python benchmarks/accuracy.py '
                       '--recipe=plus', test=summ(45.0, 25.0, 19.0, 44.0),
                       val=summ(46.0, 26.0, 20.0, 45.0),
                       step_s={'recipe': 0.3, 'release': 0.25, 'ratio': 1.2})}
  paths = []
  for name, res in runs.items():
    (tmp_path / f'{name}.json').write_text(json.dumps(res))
    paths.append(str(tmp_path / f'{name}.json'))
  assert recipe_table.main(['--files=' + ','.join(paths)]) == 0
  lines = capsys.readouterr().out.strip().split('\n')
  assert len(lines) == 2 + 1 + 3      # header, rule, oracle, release, draws, plus
  assert lines[2].startswith('| oracle | mdbench_v1 | 80.00 | 60.00 | 50.00 |')
  assert '| release | mdbench_v1 | 40.00 ± 1.00 | 20.00 ± 2.00 | 15.00 ± 0.50 | 38.50 |' \
      in lines[3] and 'not timed' in lines[3] and f'--output={paths[0]}' in lines[3]
  assert lines[4].startswith('| release + draws') and '42.00 ± 1.00' in lines[4]
  assert '| 44.00 | 46.00 / 26.00 / 20.00 | x1.20 |' in lines[5]
  assert recipe_table.main([]) == 2


def test_recipe_table_labels_a_run_of_a_since_redefined_recipe_by_its_settings():
  assert recipe_table.label({'recipe': 'release', 'settings': {}}) == 'release'
  assert recipe_table.label({'recipe': 'ema', 'settings': {'ema_decay': 0.999}}) == 'ema'
  old_plus = {'ema_decay': 0.999, 'lr_schedule': 'cosine', 'lr_warmup_epochs': 1.0}
  # 'warmup' is inside 'cosine': only the larger candidate is named.
  assert recipe_table.label({'recipe': 'plus', 'settings': old_plus}) == \
      "cosine+ema (run as 'plus')"


def test_variants_only_needs_a_run_and_its_json(tmp_path):
  assert accuracy.main(['--variants_only', '--eval_variants=steps50']) == 2
  assert accuracy.main(['--variants_only', f'--workdir={tmp_path}', '--eval_variants=steps50',
                        f'--output={tmp_path / "absent.json"}']) == 2


def test_recipe_table_names_the_command_that_scored_a_later_variant():
  s = {k: {'mean': 1.0, 'std': 0.0, 'worst': 1.0} for k in recipe_table.KEYS}
  res = {'recipe': 'release', 'data': 'mdbench_v3', 'command': 'python a.py --recipe=release',
         'test': s, 'val': s, 'variants': {'steps50': {'test': s, 'val': s}},
         'variant_commands': {'steps50': 'python a.py --variants_only --workdir=RUN_DIR'}}
  lines = recipe_table.rows(res, 'r.json')
  assert '`python a.py --recipe=release --output=r.json`' in lines[0]
  assert '`python a.py --variants_only --workdir=<release run> --output=r.json`' in lines[1]
