"""The on-disk dataset: TFDS array_record files + metadata, written and read without TF.

Layout of a dataset dir (what `data_prep/build_dataset.py` and the synthetic
generator write, atomically):
  dataset_info.json, features.json, metadata.json   TFDS metadata (dims, clip_len,
                                                    sources, counts in metadata.json)
  momentdiff-<split>.array_record-00000-of-00001    one serialized example per query
  <split>_rows.jsonl                                the annotation rows, in order
  <split>_index.json                                per-example num_clips, time_scale,
                                                    min_start (for planning batches
                                                    without reading features)
Examples keep the full video (max_v_l truncation is a load-time config choice) and
raw text tokens (L2 normalization and max_q_l truncation happen at load time); video
features are stored already L2-normalized per type (metadata `normalize_video`).
`time_scale` is the number of seconds the stored clips span: num_clips * clip_len,
or the duration for datasets pooled to a fixed clip count (C3D).
"""
import json
import os
import shutil
import tempfile
from typing import Dict, Iterable, List

import numpy as np

NAME = 'momentdiff'
FORMAT_VERSION = '1.0.0'
SPLITS = ('train', 'val', 'test')


def _features(video_dim: int, text_dim: int):
  import tensorflow_datasets as tfds  # heavy import, only where needed
  f = tfds.features
  return f.FeaturesDict({
      'video': f.Tensor(shape=(None, video_dim), dtype=np.float32),
      'query': f.Tensor(shape=(None, text_dim), dtype=np.float32),
      'windows': f.Tensor(shape=(None, 2), dtype=np.float32),
      'duration': f.Scalar(dtype=np.float32),
      'time_scale': f.Scalar(dtype=np.float32),
      'index': f.Scalar(dtype=np.int64),
  })


def clean_row(row: dict) -> dict:
  """The annotation row as written to `<split>_rows.jsonl` (no private keys)."""
  return {k: v for k, v in row.items() if not k.startswith('_') and k != 'windows'}


class DatasetWriter:
  """Writes splits one example at a time into a temp dir; `commit()` renames it.

  Use as a context manager: on an exception the temp dir is removed, so nothing
  half-written is ever left at `output_dir`.
  Example dict: video (L, Dv) f32, query (Lt, Dt) f32, windows (W, 2) f32 seconds,
  duration, time_scale (floats), row (the annotation dict).
  """

  def __init__(self, output_dir: str, video_dim: int, text_dim: int,
               overwrite: bool = False):
    from array_record.python import array_record_module
    from tensorflow_datasets.core import example_serializer
    self._arm = array_record_module
    self.output_dir = os.path.abspath(output_dir)
    if os.path.exists(self.output_dir) and os.listdir(self.output_dir) and not overwrite:
      raise FileExistsError(f'{self.output_dir} exists and is not empty')
    self.overwrite = overwrite
    parent = os.path.dirname(self.output_dir)
    os.makedirs(parent, exist_ok=True)
    self.tmp = tempfile.mkdtemp(prefix='.tmp-' + os.path.basename(self.output_dir),
                                dir=parent)
    self.video_dim, self.text_dim = video_dim, text_dim
    self.features = _features(video_dim, text_dim)
    self._ser = example_serializer.ExampleSerializer(
        self.features.get_serialized_info())
    self._writers, self._rows, self._index = {}, {}, {}

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      self.abort()
    return False

  def abort(self):
    for w in self._writers.values():
      try:
        w.close()
      except Exception:  # pylint: disable=broad-except
        pass
    self._writers = {}
    shutil.rmtree(self.tmp, ignore_errors=True)

  def _path(self, split):
    return os.path.join(self.tmp, f'{NAME}-{split}.array_record-00000-of-00001')

  def add(self, split: str, ex: dict) -> None:
    if split not in self._writers:
      # group_size:1 keeps random access cheap (one record per chunk).
      self._writers[split] = self._arm.ArrayRecordWriter(self._path(split),
                                                         'group_size:1')
      self._rows[split] = []
      self._index[split] = {'num_clips': [], 'time_scale': [], 'min_start': []}
    video, query = ex['video'], ex['query']
    assert video.shape[1] == self.video_dim and query.shape[1] == self.text_dim
    index = len(self._rows[split])
    windows = np.asarray(ex['windows'], np.float32).reshape(-1, 2)
    enc = self.features.encode_example({
        'video': video.astype(np.float32), 'query': query.astype(np.float32),
        'windows': windows, 'duration': np.float32(ex['duration']),
        'time_scale': np.float32(ex['time_scale']), 'index': index})
    self._writers[split].write(self._ser.serialize_example(enc))
    self._rows[split].append(clean_row(ex['row']))
    idx = self._index[split]
    idx['num_clips'].append(int(video.shape[0]))
    idx['time_scale'].append(float(ex['time_scale']))
    idx['min_start'].append(float(windows[:, 0].min()) if len(windows) else -1.0)

  def commit(self, metadata: dict) -> str:
    """Closes the files, writes TFDS + sidecar metadata, renames into place."""
    import tensorflow_datasets as tfds
    for w in self._writers.values():
      w.close()
    self._writers = {}
    counts = {s: len(r) for s, r in self._rows.items()}
    for split, rows in self._rows.items():
      with open(os.path.join(self.tmp, f'{split}_rows.jsonl'), 'w') as f:
        for r in rows:
          f.write(json.dumps(r) + '\n')
      with open(os.path.join(self.tmp, f'{split}_index.json'), 'w') as f:
        json.dump(self._index[split], f)
    meta = dict(metadata, counts=counts, video_feature_dim=self.video_dim,
                text_dim=self.text_dim, format_version=FORMAT_VERSION)
    template = '{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}'
    split_infos = [
        tfds.core.SplitInfo(
            name=s, shard_lengths=[n], num_bytes=os.path.getsize(self._path(s)),
            filename_template=tfds.core.ShardedFileTemplate(
                data_dir=self.tmp, template=template, dataset_name=NAME, split=s,
                filetype_suffix='array_record'))
        for s, n in counts.items()]
    tfds.folder_dataset.write_metadata(
        data_dir=self.tmp, features=self.features, split_infos=split_infos,
        filename_template=template, check_data=False, version=FORMAT_VERSION,
        description='MomentDiff moment-retrieval dataset (momentdiff_jax)',
        metadata=tfds.core.MetadataDict(json.loads(json.dumps(meta))))
    if os.path.exists(self.output_dir):
      if not self.overwrite and os.listdir(self.output_dir):
        self.abort()
        raise FileExistsError(f'{self.output_dir} appeared while writing')
      shutil.rmtree(self.output_dir)
    os.rename(self.tmp, self.output_dir)
    return self.output_dir


# ------------------------------------------------------------------ reading


def load_dataset_info(data_dir: str, use_tef: bool = True) -> dict:
  """Dataset facts for configs and the model.

  Returns dict(video_dim (batch feature dim: stored dim + 2 when `use_tef`),
  video_feature_dim (stored), text_dim, clip_len (seconds, None when pooled),
  counts {split: n}, splits, plus everything else build time recorded (sources,
  normalize_video, pool_clips, text_key, stats, ...).
  """
  with open(os.path.join(data_dir, 'metadata.json')) as f:
    meta = json.load(f)
  meta['video_dim'] = meta['video_feature_dim'] + (2 if use_tef else 0)
  meta['splits'] = sorted(meta['counts'])
  return meta


def load_index(data_dir: str, split: str) -> Dict[str, np.ndarray]:
  """Per-example num_clips (int), time_scale, min_start (float) of a split."""
  with open(os.path.join(data_dir, f'{split}_index.json')) as f:
    idx = json.load(f)
  return {'num_clips': np.asarray(idx['num_clips'], np.int64),
          'time_scale': np.asarray(idx['time_scale'], np.float64),
          'min_start': np.asarray(idx['min_start'], np.float64)}


def load_rows(data_dir: str, split: str) -> List[dict]:
  """The annotation rows of a split, row i = example `index` i: qid, query, vid,
  duration, relevant_windows and, where the source has them, relevant_clip_ids and
  saliency_scores (as in the source jsonl)."""
  with open(os.path.join(data_dir, f'{split}_rows.jsonl')) as f:
    return [json.loads(l) for l in f if l.strip()]


def open_source(data_dir: str, split: str):
  """Random-access source (TFDS `as_data_source`, no TF) of a split's examples."""
  import tensorflow_datasets as tfds
  return tfds.builder_from_directory(data_dir).as_data_source(split)


def iter_split(data_dir: str, split: str) -> Iterable[dict]:
  src = open_source(data_dir, split)
  for i in range(len(src)):
    yield src[i]
