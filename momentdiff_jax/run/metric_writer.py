"""A run's metrics: `metrics.jsonl` (and TensorBoard) behind the `MetricWriter` interface.

The interface is clu's `metric_writers`, taken from `jax_loop_utils` (clu's training-loop
utilities without its TensorFlow import: clu 0.0.12's `metric_writers` package imports
TensorFlow even for its JSON-free writers). `metrics.jsonl` holds one JSON object per
`write_scalars` call, `{"step": N, key: value, ...}`, and `scalars` lays out the keys of a
run of R replicas: the mean over replicas under `<prefix>/<name>` and, for R > 1, each
replica's under `r<k>/<prefix>/<name>` (and the std under `<prefix>_std/<name>`).
"""
import json
import os

import jax
from jax_loop_utils import metric_writers
from jax_loop_utils.metric_writers.noop_writer import NoOpWriter

from momentdiff_jax.common import atomic
from momentdiff_jax.run import replicas as replicas_lib


class JsonLinesWriter(NoOpWriter):
  """Scalars as JSON lines in `path`, one object per call with its `step`; the other
  kinds of values are not written. Opening it for a run resumed at `resume_step` drops
  the rows past that step, and the final report's rows: a run that died before its next
  checkpoint wrote them, and the resumed run writes them again."""

  def __init__(self, path: str, resume_step: int):
    self.path = path
    if os.path.exists(path):
      with open(path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
      atomic.write_jsonl(path, [r for r in rows if r['step'] <= resume_step
                                and not any(k.startswith('final_') for k in r)])

  def write_scalars(self, step: int, scalars):
    # None marks a metric with no queries (e.g. an empty length bin): not written.
    row = {'step': int(step), **{k: float(v) for k, v in scalars.items() if v is not None}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')


def create(workdir: str, resume_step: int, tensorboard: bool) -> metric_writers.MetricWriter:
  """The writer of a run: `workdir/metrics.jsonl` (and `workdir/tensorboard/` when
  `tensorboard`) on process 0, nothing on the others."""
  if jax.process_index() != 0:
    return NoOpWriter()
  writers = [JsonLinesWriter(os.path.join(workdir, 'metrics.jsonl'), resume_step)]
  if tensorboard:
    try:
      from jax_loop_utils.metric_writers.torch import TensorboardWriter
    except ImportError as e:
      raise ImportError('config.tensorboard=True needs torch and tensorboard: '
                        'pip install torch tensorboard') from e
    writers.append(TensorboardWriter(os.path.join(workdir, 'tensorboard')))
  return metric_writers.MultiWriter(writers)


def scalars(prefix: str, per_replica: list[dict], std: bool = False) -> dict:
  """{prefix/k: mean over replicas} and, for R > 1, {r<i>/prefix/k: replica i's} (and
  {prefix_std/k} with `std`); None values (no queries) dropped. One replica: exactly
  the single run's row."""
  if len(per_replica) == 1:
    out = {f'{prefix}/{k}': v for k, v in per_replica[0].items()}
  else:
    mean, sd = replicas_lib.mean_std(per_replica)
    out = {f'{prefix}/{k}': v for k, v in mean.items()}
    if std:
      out.update({f'{prefix}_std/{k}': v for k, v in sd.items()})
    for i, values in enumerate(per_replica):
      out.update({f'r{i}/{prefix}/{k}': v for k, v in values.items()})
  return {k: v for k, v in out.items() if v is not None}
