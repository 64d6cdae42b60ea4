"""Feature extraction split over processes: shares, per-shard records, the final check.

A run of N shards (`extract_features.py --num_shards=N --shard_index=I`, or the N
processes of a multi-process launch) writes into one output folder:

* Shares: video `vid` belongs to shard `shard_of(vid, N)` = the first 8 bytes of
  SHA-256(vid) as an integer, mod N: disjoint, the same in every process and every
  Python run (unlike `hash`), independent of the listing order. Queries are shared by
  `qid` the same way.
* Each shard writes only its own files: its videos' feature files and its partial
  manifest `extraction_shards/shard-IIIII-of-NNNNN.json` ({'status': 'running'|'done',
  'records': the backbone records, 'videos': its videos whose files exist, 'failed':
  [[vid, path, reason]], 'qids': its query count}). Feature dirs' `extraction.json`
  is written by a single process only (a one-shard run at its start, else `finalize`).
* `finalize` (process 0 after every shard passed a barrier, or `--finalize`) checks
  that every listed video is accounted for exactly once (its files present, or
  recorded as undecodable by the shard that owns it), that the shards' records agree,
  then writes the feature dirs' `extraction.json` and `extraction_manifest.json`
  ({'num_shards', 'videos': {vid: shard}, 'failed', 'queries'}). Anything missing
  raises `IncompleteError` naming the shards and their videos; a rerun with the same N
  then extracts just those (existing files are skipped).
"""
import glob
import hashlib
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from momentdiff_jax.common import atomic
from momentdiff_jax.common import records

SHARD_DIR = 'extraction_shards'
MANIFEST = 'extraction_manifest.json'
_NAME = re.compile(r'shard-(\d+)-of-(\d+)\.json$')
_SHOW = 20   # names listed per problem before '... N more'


class IncompleteError(ValueError):
  """Some shard's share is missing from the output."""


def shard_of(key, num_shards: int) -> int:
  """Stable shard of a video id or qid (str(key)): SHA-256, first 8 bytes, mod N."""
  digest = hashlib.sha256(str(key).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') % num_shards


def take_share(items: Sequence, key, index: int, num_shards: int) -> list:
  """The items whose key(item) falls in shard `index` of `num_shards`, in order."""
  return [x for x in items if shard_of(key(x), num_shards) == index]


def partial_path(output: str, index: int, num_shards: int) -> str:
  return os.path.join(output, SHARD_DIR, f'shard-{index:05d}-of-{num_shards:05d}.json')


def read_partials(output: str, num_shards: Optional[int] = None) -> Dict[Tuple[int, int], dict]:
  """{(index, num_shards): partial manifest} of every shard file (of one N if given)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(output, SHARD_DIR, 'shard-*-of-*.json'))):
    m = _NAME.search(path)
    if m and (num_shards is None or int(m[2]) == num_shards):
      with open(path) as f:
        out[int(m[1]), int(m[2])] = json.load(f)
  return out


def shard_counts(output: str) -> List[int]:
  """The shard counts N of the partial manifests in `output`."""
  return sorted({n for _, n in read_partials(output)})


def _show(names) -> str:
  names = list(names)
  more = f', ... {len(names) - _SHOW} more' if len(names) > _SHOW else ''
  return ', '.join(map(str, names[:_SHOW])) + more


def check_records(output: str, recs: Dict[str, dict]) -> None:
  """Refuses (ValueError naming both values) when `output` holds features of another
  extraction: a feature dir's extraction.json, or a shard's partial manifest (any N:
  a run not finalized yet) records other settings. `recs`: {feature dir name: record}."""
  for d, rec in recs.items():
    records.check_manifest(os.path.join(output, d), rec)
  for (i, n), part in read_partials(output).items():
    for d, rec in recs.items():
      old = (part.get('records') or {}).get(d)
      diff = records.record_diff(old, rec) if old else []
      if diff:
        raise ValueError(f'{os.path.join(output, d)} holds features of another extraction '
                         f'({partial_path(output, i, n)}): ' + ', '.join(diff)
                         + '; write to another --output or remove that dir')


def write_partial(output: str, index: int, num_shards: int, content: dict) -> None:
  """Writes this shard's partial manifest unless it already holds `content` (a rerun
  that does nothing changes no file)."""
  path = partial_path(output, index, num_shards)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  content = dict(content, shard=index, num_shards=num_shards)
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) == content:
        return
  atomic.write_json(path, content)


def start_partial(output: str, index: int, num_shards: int, recs: Dict[str, dict]) -> None:
  """Records this shard's settings before it writes any feature file (a killed shard
  still leaves them for the next run's `check_records`)."""
  if not os.path.exists(partial_path(output, index, num_shards)):
    write_partial(output, index, num_shards, {'status': 'running', 'records': recs})


def _agreed_records(parts: Dict[Tuple[int, int], dict]) -> Dict[str, dict]:
  recs = {}
  for (i, _), part in sorted(parts.items()):
    for d, rec in (part.get('records') or {}).items():
      if d in recs and records.record_diff(recs[d], rec):
        raise ValueError(f'shards disagree on {d}: ' + ', '.join(
            records.record_diff(recs[d], rec)) + f' (shard {i})')
      recs.setdefault(d, rec)
  return recs


def _video_problems(output, videos, num_shards, parts, dirs) -> Tuple[List[str], dict]:
  """Problems with the videos' files and claims, and {vid: [path, reason]} failures."""
  claims, failed = {}, {}
  for (i, _), part in parts.items():
    for vid in part.get('videos', []):
      claims.setdefault(vid, []).append(i)
    for vid, path, why in part.get('failed', []):
      claims.setdefault(vid, []).append(i)
      failed[vid] = [path, why]
  by_shard: Dict[int, list] = {}
  twice, absent, still_failed = [], [], {}
  for vid, _ in videos:
    owner = shard_of(vid, num_shards)
    if claims.get(vid, [owner]) != [owner]:
      twice.append(f'{vid} (shards {claims[vid]}, owner {owner})')
    if all(os.path.exists(os.path.join(output, d, f'{vid}.npz')) for d in dirs):
      continue
    if vid in failed:
      still_failed[vid] = failed[vid]
      continue
    done = parts.get((owner, num_shards), {}).get('status') == 'done'
    (absent if done else by_shard.setdefault(owner, [])).append(vid)
  problems = [f'shard {i} of {num_shards} has not finished ({len(v)} of its videos have '
              f'no features: {_show(v)})' for i, v in sorted(by_shard.items())]
  if twice:
    problems.append(f'videos claimed by another shard than their own: {_show(twice)}')
  if absent:
    problems.append(f'videos of finished shards whose files are missing: {_show(absent)}')
  return problems, still_failed


def finalize(output: str, videos: Sequence[Tuple[str, str]], num_shards: int,
             queries: Optional[Sequence[dict]] = None, log=print) -> dict:
  """Checks that the N shards' shares make up every video (and query) exactly once;
  then writes the feature dirs' extraction.json and `extraction_manifest.json`.

  Returns the manifest. Raises IncompleteError naming each unfinished shard and its
  missing videos (or queries), ValueError when the shards' records disagree.
  """
  parts = read_partials(output, num_shards)
  recs = _agreed_records(parts)
  dirs = [d for d in recs if d != records.TEXT_DIR]
  if not dirs:
    raise IncompleteError(f'{output}: no shard of {num_shards} has started (no '
                          f'{SHARD_DIR}/shard-*-of-{num_shards:05d}.json)')
  problems, failed = _video_problems(output, videos, num_shards, parts, dirs)
  if queries is not None:
    text_dir = os.path.join(output, records.TEXT_DIR)
    lost = {}
    for r in queries:
      if not os.path.exists(os.path.join(text_dir, f'qid{r["qid"]}.npz')):
        lost.setdefault(shard_of(r['qid'], num_shards), []).append(r['qid'])
    problems += [f'shard {i} of {num_shards}: query features missing for qids {_show(q)}'
                 for i, q in sorted(lost.items())]
  if problems:
    raise IncompleteError(f'{output}: extraction incomplete:\n  ' + '\n  '.join(problems)
                          + f'\nRerun the shards named (same --num_shards={num_shards}): '
                          'existing files are skipped.')
  for d, rec in recs.items():
    records.write_manifest(os.path.join(output, d), rec)
  manifest = {'num_shards': num_shards, 'backbones': dirs,
              'videos': {vid: shard_of(vid, num_shards) for vid, _ in videos
                         if vid not in failed},
              'failed': [[failed[v][0], failed[v][1]] for v in sorted(failed)],
              'queries': None if queries is None else len(queries)}
  path = os.path.join(output, MANIFEST)
  if not os.path.exists(path) or _load(path) != manifest:
    atomic.write_json(path, manifest)
  log(f'{len(manifest["videos"])} videos in {num_shards} shard(s) complete in {output} '
      f'({len(failed)} undecodable); wrote {MANIFEST}')
  return manifest


def _load(path: str):
  with open(path) as f:
    return json.load(f)
