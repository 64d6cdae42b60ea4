"""Input pipeline: feature files -> video-keyed store (.npy) -> static-shape batches.

Public API for the training loop:
  resolve_data_dir(config) -> str
  load_dataset_info(data_dir, use_tef=True) -> dict
  TrainIterator(config, data_dir, process_index, process_count, local_batch)
      .next() / iteration, .get_state(), .set_state(state), .steps_per_epoch
  eval_batches(config, data_dir, split, batch_size, process_index, process_count)
  num_eval_batches(config, data_dir, split, batch_size) -> int
  load_rows(data_dir, split) -> list of annotation dicts (row i = index i)
"""
from momentdiff_jax.common.errors import DataError
from momentdiff_jax.data.examples import BATCH_KEYS
from momentdiff_jax.data.pipeline import eval_batches
from momentdiff_jax.data.pipeline import num_eval_batches
from momentdiff_jax.data.pipeline import resolve_data_dir
from momentdiff_jax.data.pipeline import TrainIterator
from momentdiff_jax.data.store import load_dataset_info
from momentdiff_jax.data.store import load_rows
