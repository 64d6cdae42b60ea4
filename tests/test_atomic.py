"""common.atomic: a file is the old one or the whole new one, never half of it; and the
evaluation outputs written through it."""
import json
import os
import subprocess
import sys

import pytest

from momentdiff_jax import evaluation
from momentdiff_jax.common import atomic
from momentdiff_jax.run import replicas

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _listing(folder):
  return sorted(os.listdir(folder))


def test_writes_whole_files_and_leaves_no_temporary(tmp_path):
  path = tmp_path / 'm.json'
  atomic.write_json(str(path), {'a': [1, 2]})
  assert json.loads(path.read_text()) == {'a': [1, 2]}
  atomic.write_jsonl(str(tmp_path / 'r.jsonl'), ({'i': i} for i in range(3)))
  assert (tmp_path / 'r.jsonl').read_text() == '{"i": 0}\n{"i": 1}\n{"i": 2}\n'
  atomic.write_text(str(path), 'new')
  assert path.read_text() == 'new'
  assert _listing(tmp_path) == ['m.json', 'r.jsonl']
  with pytest.raises(ValueError, match='mode "w" or "wb"'):
    with atomic.atomic_open(str(path), 'a'):
      pass


def test_an_error_part_way_keeps_the_old_file(tmp_path):
  path = tmp_path / 'preds.jsonl'
  path.write_text('old\n')

  def rows():
    yield {'qid': 1}
    raise RuntimeError('died after one row')
  with pytest.raises(RuntimeError, match='died after one row'):
    atomic.write_jsonl(str(path), rows())
  assert path.read_text() == 'old\n'
  assert _listing(tmp_path) == ['preds.jsonl']


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path):
  """SIGKILL after half the rows: the target still holds the old rows (a plain
  open(path, 'w') would have truncated it); only a hidden temporary is left."""
  path = tmp_path / 'preds.jsonl'
  path.write_text('{"old": true}\n')
  code = (
      'import os, signal, sys\n'
      'from momentdiff_jax.common import atomic\n'
      'def rows():\n'
      '  for i in range(1000):\n'
      '    if i == 500:\n'
      '      sys.stdout.flush(); os.kill(os.getpid(), signal.SIGKILL)\n'
      '    yield {"qid": i}\n'
      f'atomic.write_jsonl({str(path)!r}, rows())\n')
  res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
  assert res.returncode == -9, res.stderr
  assert path.read_text() == '{"old": true}\n'
  left = [n for n in _listing(tmp_path) if n != 'preds.jsonl']
  assert len(left) == 1 and left[0].startswith('.preds.jsonl.') and left[0].endswith('.tmp')


def test_evaluation_outputs_are_replaced_whole(tmp_path):
  """A failure while writing new predictions leaves the earlier evaluation's files."""
  preds = [{'qid': i, 'pred_relevant_windows': [[0.0, 2.0, 0.9]]} for i in range(4)]
  metrics = {'brief': {'MR-full-mAP': 12.5}}
  one = [replicas.Replica(0, 0, {})]     # a one-replica run: files directly in the folder
  evaluation.write_outputs(str(tmp_path), 'val', [preds], [metrics], one, 1)
  before = {n: (tmp_path / n).read_text() for n in _listing(tmp_path)}
  assert sorted(before) == ['val_metrics.json', 'val_preds.jsonl']
  assert [json.loads(l) for l in before['val_preds.jsonl'].splitlines()] == preds
  bad = preds[:3] + [{'qid': 3, 'pred_relevant_windows': {0.5}}]   # a set: not JSON
  with pytest.raises(TypeError):
    evaluation.write_outputs(str(tmp_path), 'val', [bad], [{'brief': {'MR-full-mAP': 0.0}}],
                             one, 1)
  assert {n: (tmp_path / n).read_text() for n in _listing(tmp_path)} == before
