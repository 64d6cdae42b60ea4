"""Writes the K = 1 record: `python -m tests.records.make_k1_record` (from the repo root).

A small one-replica training (`record_config`: a 32-wide model, 12 steps on a small
synthetic dataset, validation at steps 6 and 12) run through
`train.train_and_evaluate`, and what it leaves:
  k1_record.json   every metrics.jsonl row (losses, validation, final metrics), the
                   final `eval/<split>_metrics.json` briefs, and what `evaluate_workdir`
                   and `Predictor` give on the workdir
  k1_workdir/      the workdir itself, cut to config.json and its best checkpoint
                   (`data.dir` replaced by a placeholder: tests pass the regenerated
                   dataset as an override)
`tests/test_k1_record.py` reruns the same run with the current code and checks the
losses and metrics against this record, and loads / evaluates `k1_workdir`.

The committed files were made BEFORE replicas became the only code path (issue 18,
on the code of e3d2935): regenerate them only when the numbers are meant to change
(a model or data change), never to make the test pass after a refactor.
"""
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = os.path.join(HERE, 'k1_record.json')
WORKDIR = os.path.join(HERE, 'k1_workdir')
DATA_PLACEHOLDER = '<the dataset of tests/records/make_k1_record.py:make_dataset>'

# Small and fast on 2 CPU cores: one length bucket (one train-step and one sampler
# program), 12 steps, validation twice.
DATASET = dict(num_train=48, num_val=16, num_test=16)
OVERRIDES = {
    'model.hidden_dim': 32, 'model.num_heads': 4, 'model.ffn_dim': 64,
    'data.length_buckets': (64,), 'batch_size': 16, 'eval_batch_size': 16,
    'num_train_steps': 12, 'log_every_steps': 2, 'eval_every_steps': 6,
    'checkpoint_every_steps': 6, 'diffusion.sampling_steps': 2,
}
PREDICT_CLIPS, PREDICT_TOKENS, PREDICT_DURATION = 20, 7, 20.0


def make_dataset(path: str) -> str:
  from momentdiff_jax.data import synthetic
  return synthetic.write_synthetic(path, **DATASET)


def record_config(data_dir: str):
  from configs import synthetic as synthetic_config
  from momentdiff_jax.common import config_base
  c = synthetic_config.get_config()
  c.data.dir = data_dir
  for key, value in OVERRIDES.items():
    config_base.set_key(c, key, value)
  return c


def read_rows(workdir: str) -> list:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f if l.strip()]


def read_briefs(workdir: str) -> dict:
  out = {}
  for split in ('val', 'test'):
    with open(os.path.join(workdir, 'eval', f'{split}_metrics.json')) as f:
      out[split] = json.load(f)['brief']
  return out


def predictor_inputs(feature_dim: int, text_dim: int):
  """A fixed random query for `Predictor.predict`: ((L, Dv), (Lt, Dt), duration)."""
  import numpy as np
  rng = np.random.default_rng(0)
  return (rng.normal(size=(PREDICT_CLIPS, feature_dim)),
          rng.normal(size=(PREDICT_TOKENS, text_dim)), PREDICT_DURATION)


def main():
  from momentdiff_jax import evaluation
  from momentdiff_jax import train
  from momentdiff_jax.inference.predictor import Predictor
  from momentdiff_jax.run import checkpointing
  root = tempfile.mkdtemp(prefix='k1_record_')
  data_dir = make_dataset(os.path.join(root, 'data'))
  workdir = os.path.join(root, 'wd')
  train.train_and_evaluate(record_config(data_dir), workdir)
  record = {'dataset': DATASET, 'overrides': OVERRIDES, 'rows': read_rows(workdir),
            'final': read_briefs(workdir)}

  # The workdir as committed: config.json (data.dir as a placeholder) + best checkpoint.
  shutil.rmtree(WORKDIR, ignore_errors=True)
  os.makedirs(os.path.join(WORKDIR, 'checkpoints'))
  shutil.copytree(os.path.join(workdir, 'checkpoints', 'best'),
                  os.path.join(WORKDIR, 'checkpoints', 'best'))
  config = checkpointing.load_config(workdir)
  config.data.dir = DATA_PLACEHOLDER
  with open(os.path.join(WORKDIR, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))

  # What evaluate.py and Predictor give on it (the evaluation writes into the copy's
  # eval/, removed after).
  copy = os.path.join(root, 'copy')
  shutil.copytree(WORKDIR, copy)
  metrics = evaluation.evaluate_workdir(copy, 'test', overrides={'data.dir': data_dir})
  record['evaluate_workdir_test'] = metrics['brief']
  p = Predictor.from_workdir(copy)
  out = p.predict(*predictor_inputs(p.feature_dim, p.config.text_dim))
  record['predictor'] = {'pred_relevant_windows': out['pred_relevant_windows'],
                         'pred_saliency_scores': out['pred_saliency_scores']}
  with open(RECORD, 'w') as f:
    json.dump(record, f, indent=1)
    f.write('\n')
  shutil.rmtree(root)
  print(f'wrote {RECORD} ({len(record["rows"])} rows) and {WORKDIR}', file=sys.stderr)


if __name__ == '__main__':
  main()
