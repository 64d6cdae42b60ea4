"""The demo's service on a synthetic-data workdir (no backbones; no browser needed):
test videos by id rendered as playable videos, typed queries in the synthetic
vocabulary or the stored features of the annotated query, feature-file uploads, and
bad input refused by name. Answers equal Predictor's on the same arrays."""
import io
import os

import numpy as np
import pytest

from momentdiff_jax import Predictor  # pylint: disable=g-import-not-at-top
from momentdiff_jax.data import synthetic  # pylint: disable=g-import-not-at-top
from momentdiff_jax.demo import service as service_lib  # pylint: disable=g-import-not-at-top
from momentdiff_jax.demo.synthetic_source import SyntheticSource  # pylint: disable=g-import-not-at-top
from tests import demo_fixtures  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='module')
def svc(tmp_path_factory):
  root = tmp_path_factory.mktemp('demo_service')
  config = demo_fixtures.tiny_config(64 + 2, 32, 1.0)
  config.data.name, config.data.dir = 'synthetic', synthetic.ensure_synthetic()
  config.data.max_v_l, config.data.length_buckets = 64, (32, 64)
  wd = demo_fixtures.write_workdir(str(root / 'wd'), config)
  p = Predictor.from_workdir(wd)
  s = service_lib.DemoService(p, str(root / 'cache'), synthetic=SyntheticSource(p.config))
  s.reference = Predictor.from_workdir(wd)       # a fresh key sequence to compare with
  return s


def npy_bytes(a) -> bytes:
  buf = io.BytesIO()
  np.save(buf, a)
  return buf.getvalue()


def check(ans, ref, top_k):
  wins = ref['pred_relevant_windows']
  want = np.asarray(demo_fixtures.first_of_each(wins))[:top_k]
  got = np.asarray([[m['start'], m['end'], m['score']] for m in ans['moments']])
  np.testing.assert_allclose(got, want, atol=1e-5)
  if len(want) < top_k:      # all shown: every proposal counted once
    assert sum(m['proposals'] for m in ans['moments']) == len(wins)
  np.testing.assert_allclose(ans['saliency'], ref['pred_saliency_scores'], atol=1e-5)


def test_synthetic_videos_queries_and_uploads(svc):
  info = svc.info()
  assert info['synthetic'] and info['text_typed'] and not info['video_files']
  assert 'synthetic data' in info['video_reason'] and len(info['examples']) == 500
  from momentdiff_jax.features import video as video_lib
  row = info['examples'][0]
  e = svc.add_synthetic(row['vid'])
  st = e.status()
  assert st['state'] == 'ready' and st['has_media'] and st['annotation']['query'] == row['query']
  feats, _, stored = svc.synthetic.video(row['vid'])
  n = len(feats)
  assert st['num_clips'] == n and st['duration'] == row['duration'] == float(n)
  # The rendered video lasts the clips; the annotated window's clips show its concept.
  assert video_lib.probe(e.media).duration == pytest.approx(n, abs=0.3)
  concept = int(row['query'].split('/')[0][len('concept'):])
  s, t = map(int, row['windows'][0])
  assert st['labels'][s:t] == [concept] * (t - s)
  assert len(e.thumbs) == n and e.thumbs[0][:2] == b'\xff\xd8'     # JPEG

  ref = svc.reference
  # The annotated query: the stored features; another sentence: the vocabulary's.
  ans = svc.query(e.id, row['query'], top_k=3)
  assert ans['text_source'].startswith('stored with the dataset') and not ans['cached']
  check(ans, ref.predict(feats, stored, float(n)), 3)
  ans = svc.query(e.id, f'concept{concept} w3', top_k=10)
  assert 'vocabulary' in ans['text_source']
  check(ans, ref.predict(feats, synthetic.encode_text(f'concept{concept} w3', svc.synthetic.params),
                         float(n)), 10)
  again = svc.query(e.id, f'concept{concept} w3', top_k=10)
  assert again['cached'] and again['moments'] == ans['moments']

  # The same clips uploaded as a feature file (duration: clips x clip length).
  up = svc.add_feature_files([('syn.npy', npy_bytes(feats))], None)
  assert up.status()['labels'] == st['labels'] and up.duration == float(n)
  ans = svc.query(up.id, 'concept1', top_k=5)
  check(ans, ref.predict(feats, synthetic.encode_text('concept1', svc.synthetic.params),
                         float(n)), 5)


def test_bad_input_is_refused_by_name(svc):
  e = svc.add_synthetic('syn3_1')
  with pytest.raises(service_lib.InputError, match="'dog' is not a word.*concept0"):
    svc.query(e.id, 'concept1 dog')
  with pytest.raises(service_lib.InputError, match='empty'):
    svc.query(e.id, '  ')
  with pytest.raises(service_lib.InputError, match='bad.npy: not a readable'):
    svc.add_feature_files([('bad.npy', b'\x00junk' * 10)], None)
  with pytest.raises(service_lib.InputError, match=r'wide.npy: .*65 dims.*expects 64'):
    svc.add_feature_files([('wide.npy', npy_bytes(np.ones((9, 65), np.float32)))], None)
  buf = io.BytesIO()
  np.savez(buf, a=np.ones((3, 64)), b=np.ones((3, 64)))
  with pytest.raises(service_lib.InputError, match=r"two.npz: no array named features"):
    svc.add_feature_files([('two.npz', buf.getvalue())], None)
  with pytest.raises(service_lib.InputError, match='duration must be > 0'):
    svc.add_feature_files([('ok.npy', npy_bytes(np.ones((9, 64), np.float32)))], -1.0)
  with pytest.raises(service_lib.InputError, match='cannot read video files'):
    svc.add_video_file('clip.mp4', b'\x00\x00')
  with pytest.raises(ValueError, match='no synthetic test video'):
    svc.add_synthetic('nope')
  assert os.path.isdir(svc.cache_dir)
