"""extract_features.py split over processes: shares, partial manifests, finalizing.

Generated videos (one undecodable) and a tiny CLIP (video and query features). A
one-process run on 2 CPU devices is the reference; shard 0 of 2 then runs alone (an
array job), `--finalize` names the missing shard and its videos, and a 2 processes x 2
devices run through `launch/local.sh` completes the rest without redoing shard 0. The
union must equal the reference file by file, every array byte-equal.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from momentdiff_jax.cli import extract as extract_features  # pylint: disable=g-import-not-at-top
from momentdiff_jax.features import shards  # pylint: disable=g-import-not-at-top
from tests.test_features_extract import QUERIES, VIDEOS, make_clip_dir  # pylint: disable=g-import-not-at-top
from tests.test_features_video import write_video  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'data_prep', 'extract_features.py')
LAUNCH = os.path.join(ROOT, 'launch', 'local.sh')


def _env(devices=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  for k in ('MOMENTDIFF_COORDINATOR', 'MOMENTDIFF_NUM_PROCESSES', 'MOMENTDIFF_PROCESS_ID'):
    env.pop(k, None)
  if devices:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _run(cmd, devices=None):
  return subprocess.run(cmd, env=_env(devices), capture_output=True, text=True, cwd=ROOT,
                        timeout=300)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp('shards')
  vdir = root / 'videos'
  vdir.mkdir()
  for k, (n, fps) in enumerate(VIDEOS):
    write_video(vdir / f'vid{k}.mp4', fps, n)
  (vdir / 'broken.mp4').write_bytes(b'\x00junk' * 64)
  queries = str(root / 'queries.jsonl')
  with open(queries, 'w') as f:
    f.writelines(json.dumps({'qid': 100 + i, 'query': q}) + '\n' for i, q in enumerate(QUERIES))
  clip = make_clip_dir(str(root / 'clip'), seed=0)

  def args(out):
    return [SCRIPT, f'--videos={vdir}', f'--output={out}', '--clip_len=2',
            '--backbones=clip', f'--clip_weights={clip}', f'--queries={queries}',
            '--batch_size=5', '--no_progress']

  ref = str(root / 'one_process')
  res = _run([sys.executable] + args(ref), devices=2)
  assert res.returncode == 3, res.stderr[-3000:]     # broken.mp4 listed, the rest written
  return dict(root=root, args=args, ref=ref, queries=queries)


def _npz_files(out):
  return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out)
                for f in fs if f.endswith('.npz'))


def _mtimes(out):
  return {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in _npz_files(out)}


def test_shares_are_stable_disjoint_and_cover():
  vids = [f'video_{i}' for i in range(2000)]
  for n in (1, 2, 3, 7):
    parts = [shards.take_share(vids, str, i, n) for i in range(n)]
    assert sorted(sum(parts, [])) == sorted(vids)               # disjoint and complete
    assert min(map(len, parts)) > 0.8 * len(vids) / n           # roughly even
  # The same in another interpreter with another string-hash seed (not Python's hash).
  code = ('from momentdiff_jax.features import shards; '
          'print([shards.shard_of(f"video_{i}", 5) for i in range(50)])')
  out = {seed: subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                              env=dict(_env(), PYTHONHASHSEED=seed), cwd=ROOT).stdout
         for seed in ('1', '2')}
  assert out['1'] == out['2'] == str([shards.shard_of(f'video_{i}', 5) for i in range(50)]) + '\n'
  assert shards.shard_of(12, 3) == shards.shard_of('12', 3)     # qids: int or str alike


def test_array_job_shard_then_launch_completes_byte_equal(world):
  out = str(world['root'] / 'sharded')
  mine = shards.take_share([f'vid{k}' for k in range(len(VIDEOS))] + ['broken'], str, 0, 2)
  res = _run([sys.executable] + world['args'](out) + ['--num_shards=2', '--shard_index=0'],
             devices=2)
  assert res.returncode == (3 if 'broken' in mine else 0), res.stderr[-3000:]
  assert 'Shard 0 of 2 done' in res.stdout
  have = {f.split('/')[1][:-4] for f in _npz_files(out) if f.startswith('clip_features/')}
  assert have == set(mine) - {'broken'}
  assert not os.path.exists(os.path.join(out, 'clip_features', 'extraction.json'))
  assert not os.path.exists(os.path.join(out, shards.MANIFEST))

  # The missing share is named, with its videos, and nothing is written.
  res = _run([sys.executable, SCRIPT, f'--videos={world["root"]}/videos', f'--output={out}',
              f'--queries={world["queries"]}', '--finalize'])
  assert res.returncode == 4, res.stderr[-3000:]
  others = sorted(set(f'vid{k}' for k in range(len(VIDEOS))) - set(mine))
  assert 'shard 1 of 2 has not finished' in res.stderr
  assert all(v in res.stderr for v in others) and 'query features missing' in res.stderr
  assert not os.path.exists(os.path.join(out, shards.MANIFEST))

  # 2 processes x 2 devices: process 0 finds its share done, process 1 extracts its own.
  before = _mtimes(out)
  res = _run([LAUNCH, '2', '2', '--', sys.executable] + world['args'](out))
  log = res.stdout + res.stderr
  assert res.returncode == 3, log[-4000:]               # broken.mp4, reported by process 0
  assert '[p0] ' in log and 'shard 0 of 2' in log and 'shard 1 of 2' in log
  done = len(set(mine) - {'broken'})   # an undecodable video is tried again
  assert f'{done} of {len(mine)} videos already have all their feature files' in log
  assert {f: t for f, t in _mtimes(out).items() if f in before} == before   # not redone
  with open(os.path.join(out, shards.MANIFEST)) as f:
    manifest = json.load(f)
  assert manifest['num_shards'] == 2 and manifest['queries'] == len(QUERIES)
  assert sorted(manifest['videos']) == [f'vid{k}' for k in range(len(VIDEOS))]
  assert [os.path.basename(p) for p, _ in manifest['failed']] == ['broken.mp4']

  # The union equals the one-process run, file by file, byte for byte.
  assert _npz_files(out) == _npz_files(world['ref'])
  for name in _npz_files(out):
    with np.load(os.path.join(out, name)) as a, np.load(os.path.join(world['ref'], name)) as b:
      assert a.files == b.files
      for k in a.files:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), name
  for d in ('clip_features', 'clip_text_features'):
    with open(os.path.join(out, d, 'extraction.json')) as a, \
         open(os.path.join(world['ref'], d, 'extraction.json')) as b:
      assert json.load(a) == json.load(b)

  # Finalizing again changes no file; the exit status still reports the bad video.
  stamp = lambda: {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
                   for d, _, fs in os.walk(out) for f in fs}
  before = stamp()
  res = _run([sys.executable, SCRIPT, f'--videos={world["root"]}/videos', f'--output={out}',
              f'--queries={world["queries"]}', '--finalize'])
  assert res.returncode == 3, res.stderr[-3000:]
  assert stamp() == before and 'complete' in res.stdout


def test_other_settings_are_refused_before_finalizing(world, tmp_path, capsys):
  """A shard's partial manifest (no extraction.json yet) guards the folder too."""
  out = str(tmp_path / 'o')
  shards.start_partial(out, 1, 3, {'clip_features': {'backbone': 'clip', 'clip_len': 1.0}})
  assert extract_features.main(world['args'](out)[1:] + ['--num_shards=3',
                                                          '--shard_index=0']) == 1
  err = capsys.readouterr().err
  assert 'clip_len 1.0 there vs 2.0 now (--clip_len)' in err
  assert 'shard-00001-of-00003.json' in err and not os.path.exists(f'{out}/clip_features')
  for bad in (['--num_shards=2'], ['--num_shards=2', '--shard_index=2']):
    assert extract_features.main(world['args'](out)[1:] + bad) == 2   # usage error
    assert '--num_shards=N with --shard_index in 0..N-1' in capsys.readouterr().err
  # --finalize finds the shard count (3) in the output and names what is missing.
  assert extract_features.main(world['args'](out)[1:] + ['--finalize']) == 4
  err = capsys.readouterr().err
  assert all(f'shard {i} of 3 has not finished' in err for i in range(3))
