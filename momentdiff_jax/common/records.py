"""What produced a set of features, and whether two such records agree (no jax here).

A feature dir written by `extract_features.py` holds `extraction.json`: the backbone
name, its weights file and a fingerprint of it, the feature dim and the clip length.
`build_dataset.py` copies these records (or, for the public releases, the backbone
named by the dir: `clip_features`, `slowfast_features`) into the dataset metadata,
training copies them into the workdir's config, and `Predictor.predict_video` refuses
backbones that differ from them, naming both sides. `check_manifest` / `write_manifest`
keep a feature dir to one extraction: a rerun with other settings (weights, clip
length, SlowFast frames or crop) is refused naming both values and the flag.
"""
import hashlib
import json
import os
from typing import List, Optional, Sequence

from momentdiff_jax.common import atomic

NAMES = ('clip', 'slowfast')
FEATURE_DIRS = {'clip': 'clip_features', 'slowfast': 'slowfast_features'}
TEXT_DIR = 'clip_text_features'
MANIFEST = 'extraction.json'
EXTRACTOR = 'momentdiff_jax.features'
# Directory names of the public Moment-DETR-layout releases -> their backbone.
_PUBLIC_DIRS = {'clip_features': 'clip', 'slowfast_features': 'slowfast',
                'clip_text_features': 'clip'}


def fingerprint(path: str) -> str:
  """A cheap identity of a weights file or directory: names, sizes, 1 MiB at each end.

  Tells two checkpoints apart without hashing gigabytes.
  """
  files = ([os.path.join(path, f) for f in sorted(os.listdir(path))
            if os.path.isfile(os.path.join(path, f))] if os.path.isdir(path) else [path])
  h = hashlib.sha256()
  for f in files:
    size = os.path.getsize(f)
    h.update(f'{os.path.basename(f)}:{size}'.encode())
    with open(f, 'rb') as fh:
      h.update(fh.read(1 << 20))
      if size > 2 << 20:
        fh.seek(-(1 << 20), os.SEEK_END)
        h.update(fh.read())
  return h.hexdigest()[:16]


def record(name: str, weights: Optional[str], feature_dim: int, **extra) -> dict:
  """The record of one backbone (weights: the local file/dir it was loaded from)."""
  r = {'backbone': name, 'extractor': EXTRACTOR, 'feature_dim': int(feature_dim),
       'weights': os.path.basename(os.path.normpath(weights)) if weights else None,
       'fingerprint': fingerprint(weights) if weights else None}
  r.update(extra)
  return r


def infer_record(source: str) -> dict:
  """The backbone a public feature dir's name stands for (`clip_features` -> clip)."""
  name = _PUBLIC_DIRS.get(os.path.basename(os.path.normpath(source)))
  return {'backbone': name, 'inferred_from': 'directory name' if name else None}


def read_record(feat_dir: str) -> dict:
  """`<feat_dir>/extraction.json`, else the backbone the dir's name stands for."""
  path = os.path.join(feat_dir, MANIFEST)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return infer_record(feat_dir)


def describe(r: Optional[dict]) -> str:
  if not r or not r.get('backbone'):
    return 'unknown'
  s = r['backbone']
  if r.get('weights'):
    s += f' ({r["weights"]}, fingerprint {r.get("fingerprint")})'
  elif r.get('inferred_from'):
    s += ' (named by its directory, weights unrecorded)'
  return s


def mismatches(recorded: Sequence[Optional[dict]], given: Sequence[dict]) -> List[str]:
  """Reasons why `given` backbones cannot stand in for `recorded` ones (empty: fine).

  Names must agree in order; where the dataset recorded a weights fingerprint, the
  given weights must have the same one.
  """
  rec_names = [(r or {}).get('backbone') for r in recorded]
  giv_names = [g.get('backbone') for g in given]
  if rec_names != giv_names:
    return [f'the dataset\'s video features come from [{", ".join(map(describe, recorded))}], '
            f'in that order; given [{", ".join(giv_names)}]']
  out = []
  for r, g in zip(recorded, given):
    if r.get('fingerprint') and r['fingerprint'] != g.get('fingerprint'):
      out.append(f'{r["backbone"]}: the dataset was extracted with weights {describe(r)}, '
                 f'given {describe(g)}')
    if r.get('feature_dim') and g.get('feature_dim') and r['feature_dim'] != g['feature_dim']:
      out.append(f'{r["backbone"]}: feature dim {r["feature_dim"]} in the dataset, '
                 f'{g["feature_dim"]} from the given weights')
  return out


# Record fields that must agree for features to share a dir, and the flag behind each.
RECORD_KEYS = {'backbone': '--backbones', 'fingerprint': '--clip_weights / --slowfast_weights',
               'feature_dim': 'the weights', 'clip_len': '--clip_len',
               'frames_per_clip': '--slowfast_frames', 'crop': '--slowfast_crop'}


def record_diff(old: dict, new: dict) -> List[str]:
  """`key A there vs B now (flag)` for each RECORD_KEYS field that differs."""
  return [f'{k} {old.get(k)!r} there vs {new.get(k)!r} now ({flag})'
          for k, flag in RECORD_KEYS.items() if old.get(k) != new.get(k)]


def check_manifest(feat_dir: str, rec: dict) -> bool:
  """Refuses (ValueError, naming both values of every differing field) when
  `feat_dir/extraction.json` records another extraction; True if it has a record."""
  path = os.path.join(feat_dir, MANIFEST)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    diff = record_diff(json.load(f), rec)
  if diff:
    raise ValueError(f'{feat_dir} holds features of another extraction ({path}): '
                     + ', '.join(diff) + '; write to another --output or remove that dir')
  return True


def write_manifest(feat_dir: str, rec: dict) -> None:
  """Writes `<dir>/extraction.json`, or checks that an existing one describes the same
  extraction (a dir never mixes features of two extractions)."""
  if check_manifest(feat_dir, rec):
    return
  os.makedirs(feat_dir, exist_ok=True)
  atomic.write_json(os.path.join(feat_dir, MANIFEST), rec)
