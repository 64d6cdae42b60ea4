"""Small generated feature files in the Moment-DETR layout, for the data tests."""
import json
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared beside the repository (a development checkout): the full annotation files
# and the authors' release. A user's clone has none of it; tests that need the full
# files skip, naming them, and the small cuts under tests/fixtures/ always run.
SHARED = os.path.join(REPO, '..', 'shared')
ANNOTATIONS = os.path.join(SHARED, 'data', 'annotations')
FIXTURES = os.path.join(REPO, 'tests', 'fixtures')
RELEASE_DIR_ENV = 'MOMENTDIFF_RELEASE_DIR'
DIMS = (6, 4)       # two video feature types (e.g. SlowFast + CLIP, tiny)
TEXT_DIM = 5


def annotation(*parts):
  """A full annotation file under ../shared/data/annotations."""
  return os.path.join(ANNOTATIONS, *parts)


def fixture(*parts):
  """A file under tests/fixtures (cuts of the real files, see its README.md)."""
  return os.path.join(FIXTURES, *parts)


def release_dir():
  """The authors' release checkout: $MOMENTDIFF_RELEASE_DIR, else ../shared/release
  when that folder exists, else None. A variable naming a missing folder is an error
  (a typo must not turn the parity test into a skip)."""
  given = os.environ.get(RELEASE_DIR_ENV)
  if given:
    if not os.path.isdir(os.path.join(given, 'momentdiff')):
      raise FileNotFoundError(f'{RELEASE_DIR_ENV}={given}: no momentdiff/ package there '
                              '(expected a checkout of the authors\' release)')
    return given
  default = os.path.normpath(os.path.join(SHARED, 'release'))
  return default if os.path.isdir(os.path.join(default, 'momentdiff')) else None


def write_jsonl(path: str, rows) -> str:
  with open(path, 'w') as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')
  return path


def write_splits(root: str, rows, splits=('train', 'val', 'test')):
  """The same annotations as one file per split, qids offset by 1000 per split (a qid
  must not appear in two splits). Returns the paths in `splits` order."""
  paths = []
  for k, split in enumerate(splits):
    paths.append(write_jsonl(os.path.join(root, f'{split}.jsonl'),
                             [dict(r, qid=r['qid'] + 1000 * k) for r in rows]))
  return paths


def make_features(root: str, jsonl_paths, clip_len: float, seed: int = 0,
                  npy: bool = False, extra_clip: bool = True, dims=DIMS,
                  text_dim: int = TEXT_DIM):
  """Writes random features for every vid/qid of the files under `root`.

  Video type 0 gets one clip more than type 1 (`extra_clip`), as real releases do,
  so the reader's cut-to-shortest is exercised. Returns (video_dirs, text_dir).
  """
  rng = np.random.default_rng(seed)
  vdirs = [os.path.join(root, f'video{k}') for k in range(len(dims))]
  tdir = os.path.join(root, 'text')
  for d in vdirs + [tdir]:
    os.makedirs(d, exist_ok=True)
  done = set()
  for p in jsonl_paths:
    with open(p) as f:
      rows = [json.loads(l) for l in f if l.strip()]
    for r in rows:
      if r['vid'] not in done:
        done.add(r['vid'])
        n = int(np.ceil(float(r['duration']) / clip_len - 1e-6))
        for k, (d, dim) in enumerate(zip(vdirs, dims)):
          x = rng.normal(size=(n + (1 if extra_clip and k == 0 else 0), dim))
          if npy:
            np.save(os.path.join(d, f'{r["vid"]}.npy'), x.astype(np.float32))
          else:
            np.savez(os.path.join(d, f'{r["vid"]}.npz'), features=x.astype(np.float32))
      n_tok = int(rng.integers(3, 12))
      np.savez(os.path.join(tdir, f'qid{r["qid"]}.npz'),
               last_hidden_state=rng.normal(size=(n_tok, text_dim)).astype(np.float32),
               pooler_output=rng.normal(size=(text_dim,)).astype(np.float32))
  return vdirs, tdir


def data_config(max_v_l=128, buckets=(32, 64, 96, 128), max_q_l=8, max_windows=5):
  from momentdiff_jax.common.config_base import base_config
  c = base_config()
  c.data.max_v_l = max_v_l
  c.data.length_buckets = buckets
  c.data.max_q_l = max_q_l
  c.data.max_windows = max_windows
  return c
