"""One handle on a built dataset for the training loop, evaluation and Predictor."""
from typing import Iterator, Optional

import os

from momentdiff_jax.data import pipeline
from momentdiff_jax.data import store


class Dataset:
  """A dataset directory (from build_dataset.py or the synthetic generator) + config."""

  def __init__(self, config, data_dir: str):
    self.config = config
    self.data_dir = data_dir
    if not os.path.exists(os.path.join(data_dir, 'metadata.json')):
      raise FileNotFoundError(
          f'data.dir={data_dir!r} is not a dataset (no metadata.json): build one with '
          'data_prep/build_dataset.py, or use configs/synthetic.py')
    self.info = store.load_dataset_info(data_dir, use_tef=config.data.use_tef)
    self._rows = {}

  def num_examples(self, split: str) -> int:
    return int(self.info['counts'][split])

  def rows(self, split: str) -> list:
    """Annotation rows of `split`; row i is the example with `index` i."""
    if split not in self._rows:
      if split not in self.info['counts']:
        raise ValueError(f'split {split!r} not in dataset {self.data_dir} '
                         f'(has {sorted(self.info["counts"])})')
      self._rows[split] = store.load_rows(self.data_dir, split)
    return self._rows[split]

  def train_iterator(self, local_batch: int, process_index: int = 0,
                     process_count: int = 1) -> pipeline.TrainIterator:
    return pipeline.TrainIterator(self.config, self.data_dir, process_index, process_count,
                                  local_batch)

  def eval_batches(self, split: str, batch_size: int, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict]:
    """Local slices of global eval batches; every example once, dummies have index -1."""
    return pipeline.eval_batches(self.config, self.data_dir, split, batch_size,
                                 process_index, process_count)


def open_dataset(config, data_dir: Optional[str] = None) -> Dataset:
  """`config.data.dir` (or the built-in synthetic data, generated on first use)."""
  return Dataset(config, data_dir or pipeline.resolve_data_dir(config))
