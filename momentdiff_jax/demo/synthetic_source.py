"""The built-in synthetic dataset as the demo page's material.

A workdir trained by `python main.py --config=configs/synthetic.py` has no feature
backbones: its "videos" are test-split feature arrays and its "text encoder" is the
generator's word table. This gives the page the test videos by id (with their
annotated query, ground truth and stored query features), the concept each clip
shows (to draw a playable video of it) and typed queries in the synthetic vocabulary.
"""
import os
from typing import Optional

import numpy as np

from momentdiff_jax.data import store
from momentdiff_jax.data import synthetic


class SyntheticSource:
  """The test split of the synthetic dataset a workdir was trained on."""

  def __init__(self, config, split: str = 'test'):
    data_dir = config.data.get('dir') or ''
    if not os.path.exists(os.path.join(data_dir, 'metadata.json')):
      data_dir = synthetic.ensure_synthetic()   # deterministic: the same data
    self.data_dir = data_dir
    info = store.load_dataset_info(data_dir)
    self.params = info['synthetic']
    self.world = synthetic.make_world(self.params)
    self.rows = store.load_rows(data_dir, split)
    self.reader = store.SplitReader(data_dir, split)
    self._by_vid = {r['vid']: i for i, r in enumerate(self.rows)}

  @property
  def vocabulary(self) -> str:
    return synthetic.vocabulary(self.params)

  def examples(self) -> list:
    """[{vid, query, duration, windows}] of the split, in order."""
    return [{'vid': r['vid'], 'query': r['query'], 'duration': r['duration'],
             'windows': r['relevant_windows']} for r in self.rows]

  def video(self, vid: str) -> tuple:
    """(features (L, Dv) float32, its annotation row, stored query features (Lt, Dt))."""
    if vid not in self._by_vid:
      raise ValueError(f'no synthetic test video {vid!r} (ids syn3_0 .. '
                       f'syn3_{len(self.rows) - 1})')
    i = self._by_vid[vid]
    ex = self.reader.example(i)
    return ex['video'], self.rows[i], ex['query']

  def labels(self, video: np.ndarray) -> list:
    return synthetic.concept_labels(video, self.params, self.world).tolist()

  def encode(self, text: str, row: Optional[dict] = None,
             stored: Optional[np.ndarray] = None) -> tuple:
    """(query features, where they came from): a video's own annotated query uses the
    features stored with the dataset, any other text the vocabulary's embedding."""
    if row is not None and stored is not None and text.strip() == row['query']:
      return stored, f'stored with the dataset (qid {row["qid"]})'
    return (synthetic.encode_text(text, self.params, self.world),
            'the synthetic vocabulary\'s word vectors')
