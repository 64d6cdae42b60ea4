"""The built-in synthetic dataset (data.name='synthetic', data.dir='').

Generated deterministically on first use into `$MOMENTDIFF_CACHE/synthetic_v3_store2`
(default `~/.cache/momentdiff_jax/synthetic_v3_store2`) through the same writer as real
data; concurrent first uses are safe (temp dir + rename, identical content).

A video is a sequence of "concepts": background segments show random concepts, and
each query's event shows the query's own concept (absent elsewhere in the video).
A clip's feature is its concept's vector (Dv) plus Gaussian noise, L2-normalized,
so the event is present but noisy. Query tokens are filler words plus the concept's
word, embedded by an independent random table (Dt): a "different encoder", so the
model must learn which word goes with which video concept. Videos have 12..64 clips
(clip_len 1 s, both buckets of configs/synthetic.py used); GT windows have uniform
length (2 clips .. 25% of the video) and uniform location, and 20% of queries have two windows of their concept,
so no single fixed window scores well (`baselines.py`).
"""
import os
import re
from typing import Optional

import numpy as np

VERSION = 'synthetic_v3'
DEFAULTS = dict(num_train=3000, num_val=400, num_test=500, max_window_frac=0.25,
                two_window_share=0.2, video_dim=64, text_dim=32,
                num_concepts=12, min_clips=12, max_clips=64, noise=0.5,
                num_fillers=40, seed=1234)


# The cache dir also names the store format: a cache written in an older format is
# left alone (older checkouts may still read it) and this one regenerates beside it.
CACHE_NAME = f'{VERSION}_store2'


def cache_dir() -> str:
  root = os.environ.get('MOMENTDIFF_CACHE',
                        os.path.join(os.path.expanduser('~'), '.cache', 'momentdiff_jax'))
  return os.path.join(root, CACHE_NAME)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _windows(rng, n_clips: int, two: bool, max_frac: float):
  """GT windows in clips [s, e): length uniform in [2, max_frac * n], start uniform
  over the positions where it fits; `two`: one such window on each side of a cut."""
  if two:
    cut = int(rng.integers(n_clips // 3, n_clips - n_clips // 3 + 1))
    return (_windows(rng, cut, False, max_frac * n_clips / cut) +
            [(s + cut, e + cut) for s, e in
             _windows(rng, n_clips - cut, False, max_frac * n_clips / (n_clips - cut))])
  hi = max(2, min(n_clips, int(round(max_frac * n_clips))))
  length = int(rng.integers(2, hi + 1))
  s = int(rng.integers(0, n_clips - length + 1))
  return [(s, s + length)]


def generate_examples(num: int, split_seed: int, p: dict, world: dict):
  """Yields writer examples (video, query, windows, duration, time_scale, row)."""
  rng = np.random.default_rng([p['seed'], split_seed])
  k, dv = p['num_concepts'], p['video_dim']
  for i in range(num):
    n = int(rng.integers(p['min_clips'], p['max_clips'] + 1))
    concept = int(rng.integers(k))
    wins = _windows(rng, n, rng.random() < p['two_window_share'],
                    p['max_window_frac'])
    others = np.delete(np.arange(k), concept)
    # Background: segments of 2..8 clips, each a random non-query concept.
    labels = np.empty(n, np.int64)
    t = 0
    while t < n:
      seg = int(rng.integers(2, 9))
      labels[t:t + seg] = rng.choice(others)
      t += seg
    for s, e in wins:
      labels[s:e] = concept
    # Noise norm ~ `noise` x signal norm: a clip's cosine with its concept ~0.9.
    video = world['concepts'][labels] + p['noise'] * rng.normal(
        size=(n, dv)) / np.sqrt(dv)
    video = _unit(video).astype(np.float32)
    n_tok = int(rng.integers(4, 11))
    words = rng.integers(0, p['num_fillers'], size=n_tok)
    tokens = world['fillers'][words]
    pos = int(rng.integers(n_tok))
    syn = int(rng.integers(2))     # two synonyms per concept
    tokens[pos] = world['words'][concept, syn]
    tokens = (tokens + 0.05 * rng.normal(size=tokens.shape)).astype(np.float32)
    windows = np.asarray(wins, np.float32)   # clip_len 1 s: clips = seconds
    duration = float(n)
    row = {'qid': i, 'query': f'concept{concept}/{syn} ' + ' '.join(
        f'w{w}' for w in words[:3]), 'vid': f'syn{split_seed}_{i}',
           'duration': duration, 'relevant_windows': windows.tolist()}
    yield {'video': video, 'query': tokens, 'windows': windows,
           'duration': duration, 'time_scale': float(n), 'row': row}


def make_world(p: dict) -> dict:
  """The generator's fixed tables: concept vectors (K, Dv), concept words (K, 2, Dt)
  (two synonyms each) and filler words (F, Dt)."""
  wrng = np.random.default_rng([p['seed'], 0])
  return {
      'concepts': _unit(wrng.normal(size=(p['num_concepts'], p['video_dim']))),
      'words': wrng.normal(size=(p['num_concepts'], 2, p['text_dim'])),
      'fillers': wrng.normal(size=(p['num_fillers'], p['text_dim'])),
  }


def vocabulary(p: dict) -> str:
  """The words `encode_text` knows, for messages and the demo page."""
  return (f'concept0 .. concept{p["num_concepts"] - 1} (synonyms conceptK/0 and '
          f'conceptK/1), fillers w0 .. w{p["num_fillers"] - 1}')


def encode_text(text: str, p: dict, world: Optional[dict] = None) -> np.ndarray:
  """A sentence of the synthetic vocabulary -> (num_words, Dt) token features, the
  generator's embedding of each word without its noise: `conceptK` (= `conceptK/0`),
  `conceptK/S`, `wJ`. The synthetic data's "text encoder", so a person can type queries.

  Raises ValueError naming an unknown word and the vocabulary.
  """
  world = world or make_world(p)
  rows = []
  for word in text.split():
    m = re.fullmatch(r'concept(\d+)(?:/([01]))?|w(\d+)', word.strip().lower())
    if m and m[1] is not None and int(m[1]) < p['num_concepts']:
      rows.append(world['words'][int(m[1]), int(m[2] or 0)])
    elif m and m[3] is not None and int(m[3]) < p['num_fillers']:
      rows.append(world['fillers'][int(m[3])])
    else:
      raise ValueError(f'{word!r} is not a word of the synthetic data; it knows '
                       f'{vocabulary(p)}')
  if not rows:
    raise ValueError(f'empty query; the synthetic data knows {vocabulary(p)}')
  return np.asarray(rows, np.float32)


def concept_labels(video: np.ndarray, p: dict, world: Optional[dict] = None) -> np.ndarray:
  """(L, Dv) synthetic clip features -> (L,) the concept each clip shows (the nearest
  concept vector; the noise keeps the true one nearest, cosine ~0.9 vs ~0)."""
  world = world or make_world(p)
  return np.argmax(np.asarray(video, np.float32) @ world['concepts'].T.astype(np.float32),
                   axis=-1)


def write_synthetic(output_dir: str, feature_dtype: str = 'float32', **overrides) -> str:
  """Generates the dataset into `output_dir` (atomic), features stored as
  `feature_dtype`; returns it."""
  from momentdiff_jax.data import store
  p = dict(DEFAULTS, **overrides)
  world = make_world(p)
  writer = store.DatasetWriter(output_dir, feature_dtype=feature_dtype)
  with writer:
    for split_seed, (split, num) in enumerate(
        (('train', p['num_train']), ('val', p['num_val']), ('test', p['num_test'])),
        start=1):
      for ex in generate_examples(num, split_seed, p, world):
        ex['row']['qid'] += 100000 * (split_seed - 1)   # unique over splits
        writer.add(split, ex)
    return writer.commit({'clip_len': 1.0, 'pool_clips': 0, 'normalize_video': True,
                          'text_key': 'last_hidden_state', 'synthetic': p,
                          'sources': {'generator': f'momentdiff_jax.data.synthetic '
                                                   f'{VERSION}'}})


def ensure_synthetic(path: str = '') -> str:
  """Returns the cached synthetic dataset dir, generating it on first use."""
  path = path or cache_dir()
  if os.path.exists(os.path.join(path, 'metadata.json')):
    return path
  try:
    return write_synthetic(path)
  except FileExistsError:     # another process finished first: same content
    if os.path.exists(os.path.join(path, 'metadata.json')):
      return path
    raise
