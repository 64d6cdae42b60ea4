"""Evaluates MomentDiff predictions with the standard (QVHighlights standalone) metrics.
Console script `momentdiff-evaluate`, or `python evaluate.py`, same flags.

Score a prediction file alone:
  python evaluate.py --predictions=PREDS.jsonl --ground_truth=GT.jsonl \\
      [--dataset=charades|qvhighlights|tacos] [--output=M.json]

Predict and score a trained run (writes DIR/eval/<split>_{preds.jsonl,metrics.json}):
  python evaluate.py --workdir=DIR [--split=test] [--checkpoint=best|latest]
      [--sampling_steps=N] [--plots] [--replica=k|all] [--override=KEY=VALUE ...]
`--override` changes the workdir's config for this evaluation (e.g. `data.dir=OTHER`, a
dataset built from the same feature types; `eval_batch_size=16`); keys that fix the
trained parameters (model.*, diffusion.num_spans, ...) are refused, naming them.
Library logs stay off the console unless `--verbosity=0`; `--compile_cache=DIR|off`
as for main.py.
Several processes (every one predicts its share; process 0 writes the files):
  launch/local.sh 2 2 -- python evaluate.py --workdir=DIR

Both print the metrics JSON, its "brief" block first.
"""
import json
import os

from absl import flags

from momentdiff_jax.common import app
from momentdiff_jax.common import atomic

FLAGS = flags.FlagValues()
# Workdir mode.
flags.DEFINE_string('workdir', None, 'Training run to evaluate (predicts, then scores).',
                    flag_values=FLAGS)
flags.DEFINE_string('split', 'test', 'Split to predict on in workdir mode.', flag_values=FLAGS)
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                  'Which checkpoint of the workdir to use.', flag_values=FLAGS)
flags.DEFINE_integer('sampling_steps', None,
                     'Diffusion sampling steps (default: the config\'s).', flag_values=FLAGS)
flags.DEFINE_bool('plots', False, 'Also write PNG figures under DIR/eval/.', flag_values=FLAGS)
flags.DEFINE_multi_string('override', [], 'KEY=VALUE changing the workdir\'s config for '
                          'this evaluation (repeatable), e.g. data.dir=OTHER_DATASET.',
                          flag_values=FLAGS)
flags.DEFINE_string('compile_cache', None, 'Directory of JAX\'s persistent compilation '
                    'cache; "off" disables it (default as for main.py).', flag_values=FLAGS)
flags.DEFINE_string('replica', 'all',
                    'Workdirs of several replicas (--config.num_seeds / sweeps): "all" '
                    '(every replica in one program; mean and std in eval/<split>_metrics.json) '
                    'or an index k (replica k alone, into eval/r<k>/).', flag_values=FLAGS)
# File-scoring mode.
flags.DEFINE_string('predictions', None, 'Prediction rows (jsonl) to score.', flag_values=FLAGS)
flags.DEFINE_string('ground_truth', None, 'Annotation rows (jsonl) to score against.',
                    flag_values=FLAGS)
flags.DEFINE_string('dataset', 'qvhighlights',
                    'Dataset name; picks the length bins (charades*, tacos*, else '
                    'QVHighlights).', flag_values=FLAGS)
flags.DEFINE_string('output', None, 'Optional path to write the metrics JSON to.',
                    flag_values=FLAGS)
# Multi-process workdir mode (launch/local.sh, SLURM and TPU pods are detected alone).
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (multi-process runs).',
                    flag_values=FLAGS)
flags.DEFINE_integer('num_processes', 0, 'Number of processes (multi-process runs).',
                     flag_values=FLAGS)
flags.DEFINE_integer('process_id', -1, 'This process (multi-process runs).', flag_values=FLAGS)


def format_metrics(metrics: dict) -> str:
  """JSON text, one brief metric per line and one line per detailed sub-block.

  The full nested dump is ~150 lines, mostly per-threshold numbers; this keeps the
  headline numbers on screen while staying valid JSON.
  """
  lines = ['{']
  items = list(metrics.items())
  for i, (name, block) in enumerate(items):
    sep = ',' if i < len(items) - 1 else ''
    if not isinstance(block, dict):
      lines.append(f'  {json.dumps(name)}: {json.dumps(block)}{sep}')
      continue
    lines.append(f'  {json.dumps(name)}: {{')
    sub = list(block.items())
    for j, (key, value) in enumerate(sub):
      sub_sep = ',' if j < len(sub) - 1 else ''
      lines.append(f'    {json.dumps(key)}: {json.dumps(value)}{sub_sep}')
    lines.append('  }' + sep)
  lines.append('}')
  return '\n'.join(lines)


def score_files(predictions: str, ground_truth: str, dataset: str,
                output: str = None) -> dict:
  """File-scoring mode: metrics of a prediction file, printed and optionally saved."""
  from momentdiff_jax.ops import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  metrics = metrics_lib.evaluate_files(predictions, ground_truth, dataset)
  print(format_metrics(metrics))
  if output:
    if os.path.dirname(output):
      os.makedirs(os.path.dirname(output), exist_ok=True)
    atomic.write_json(output, metrics)
  return metrics


def evaluate_workdir() -> int:
  """Workdir mode: predict, score, write DIR/eval/; 1 for an error the user can fix."""
  # Imported here so that file scoring needs neither JAX nor a model.
  # pylint: disable=g-import-not-at-top
  import jax
  from momentdiff_jax import evaluation
  from momentdiff_jax.data import DataError
  from momentdiff_jax.run import checkpointing
  from momentdiff_jax.run import compile_cache
  from momentdiff_jax.run import mesh as mesh_lib
  from momentdiff_jax.run import workdir as workdir_lib
  # pylint: enable=g-import-not-at-top
  mesh_lib.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  cache_dir = compile_cache.enable(FLAGS.compile_cache)
  timer = compile_cache.timer()
  try:
    evaluation.evaluate_workdir(workdir=FLAGS.workdir, split=FLAGS.split,
                                checkpoint=FLAGS.checkpoint,
                                sampling_steps=FLAGS.sampling_steps,
                                plots=FLAGS.plots,
                                overrides=workdir_lib.parse_overrides(FLAGS.override),
                                replica=FLAGS.replica)
  except (workdir_lib.ConfigMismatch, checkpointing.CheckpointMismatch, DataError,
          FileNotFoundError) as e:
    return app.error(e)
  if jax.process_index() == 0:
    print(timer.summary(cache_dir))
  return 0


def _main():
  if FLAGS.workdir:
    if FLAGS.predictions or FLAGS.ground_truth:
      raise app.UsageError('--workdir excludes --predictions/--ground_truth.')
    if FLAGS.replica != 'all' and not FLAGS.replica.isdigit():
      raise app.UsageError(f'--replica must be "all" or an index >= 0, got {FLAGS.replica!r}')
    return evaluate_workdir()
  if FLAGS.predictions and FLAGS.ground_truth:
    score_files(FLAGS.predictions, FLAGS.ground_truth, FLAGS.dataset, FLAGS.output)
    return 0
  raise app.UsageError('Give --workdir, or both --predictions and --ground_truth.')


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
