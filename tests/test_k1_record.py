"""A one-replica run against the record made before replicas became the only code path
(`tests/records/make_k1_record.py`): the same losses and metrics, bit for bit, and the
recorded old workdir still loads and evaluates to the recorded numbers."""
import json
import os
import shutil

import pytest

from tests.records import make_k1_record as rec


@pytest.fixture(scope='module')
def record():
  with open(rec.RECORD) as f:
    out = json.load(f)
  # The record belongs to the settings in make_k1_record.py (JSON: tuples as lists).
  assert out['dataset'] == rec.DATASET
  assert out['overrides'] == json.loads(json.dumps(rec.OVERRIDES))
  return out


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return rec.make_dataset(str(tmp_path_factory.mktemp('k1') / 'data'))


def _files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def test_k1_run_equals_record(record, data_dir, tmp_path):
  from momentdiff_jax import train
  workdir = str(tmp_path / 'wd')
  train.train_and_evaluate(rec.record_config(data_dir), workdir)
  rows = rec.read_rows(workdir)
  assert [r['step'] for r in rows] == [r['step'] for r in record['rows']]
  for got, want in zip(rows, record['rows']):
    assert got == want, got['step']          # exact: same floats, same keys
  assert rec.read_briefs(workdir) == record['final']
  # A one-replica workdir keeps the single-run layout: no replica axis on disk.
  assert _files(os.path.join(workdir, 'eval')) == [
      'test_metrics.json', 'test_preds.jsonl', 'val_metrics.json', 'val_preds.jsonl']
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['best', 'latest']


def test_old_k1_workdir_loads_and_evaluates(record, data_dir, tmp_path):
  from momentdiff_jax import evaluation
  from momentdiff_jax.inference.predictor import Predictor
  workdir = str(tmp_path / 'old')
  shutil.copytree(rec.WORKDIR, workdir)
  metrics = evaluation.evaluate_workdir(workdir, 'test', overrides={'data.dir': data_dir})
  assert metrics['brief'] == record['evaluate_workdir_test']
  assert _files(os.path.join(workdir, 'eval')) == ['test_metrics.json', 'test_preds.jsonl']
  p = Predictor.from_workdir(workdir)
  out = p.predict(*rec.predictor_inputs(p.feature_dim, p.config.text_dim))
  assert out['pred_relevant_windows'] == record['predictor']['pred_relevant_windows']
  assert out['pred_saliency_scores'] == record['predictor']['pred_saliency_scores']
