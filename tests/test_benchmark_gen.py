"""The accuracy benchmark's generator and oracle: brute force on tiny inputs,
determinism, and the shipped table against the full annotation files."""
import itertools
import os

import numpy as np
import pytest
from scipy.special import logsumexp

from momentdiff_jax.data import benchmark_gen as gen
from momentdiff_jax.data import benchmark_rows

ROWS = [dict(src='charades', split=s, inst=f'charades:v{i}', vid=f'v{i}', duration=d,
             windows=w, qid=i * 10 + j)
        for i, (s, d, wins) in enumerate([('train', 12.0, [[[1.0, 5.0]], [[6.5, 11.0]]]),
                                          ('val', 9.0, [[[0.0, 3.5]], [[0.0, 3.5]]]),
                                          ('test', 15.0, [[[2.0, 9.0]], [[10.0, 14.0]]])])
        for j, w in enumerate(wins)]
TINY = dict(video_dims=(40, 12), gains=(1.0, 0.7), latent_dim=6, num_families=3,
            classes_per_family=2, text_dim=16, num_fillers=20)


def test_best_segments_matches_brute_force():
  rng = np.random.RandomState(0)
  for _ in range(20):
    llr = rng.randn(int(rng.randint(1, 9)))
    segs = gen.best_segments(llr, top_k=3, nms=0.5)
    brute = max(((s, e) for s, e in itertools.combinations(range(len(llr) + 1), 2)),
                key=lambda se: llr[se[0]:se[1]].sum())
    assert segs[0][2] == pytest.approx(llr[brute[0]:brute[1]].sum())
    assert llr[segs[0][0]:segs[0][1]].sum() == pytest.approx(segs[0][2])
    for (a, b, _), (c, d, _) in itertools.combinations(segs, 2):
      assert max(0, min(b, d) - max(a, c)) / (max(b, d) - min(a, c)) <= 0.5


def test_clip_llr_matches_direct_gaussian_mixture():
  """The oracle's per-clip LLR from the projected features vs the mixture density
  written out with scipy's logsumexp over every distractor class, in float64."""
  p = dict(gen.V1, **TINY)
  world = gen.make_world(p)
  rng = np.random.default_rng(5)
  rows = [r for r in ROWS if r['split'] == 'test']
  inst = gen.generate_instance(rng, world, p, rows)
  llr = gen.clip_llr(inst, world, p, 0)
  cls = inst['classes'][0]
  pi = np.clip(inst['member'][1].mean(), 1e-3, 1 - 1e-3)
  prior = gen.distractor_prior(world, p, cls)
  for i in range(inst['num_clips']):
    def logp(mean):
      return sum(-((x[i] @ w.T - g * mean) ** 2).sum() / (2 * s * s)
                 for g, s, x, w in zip(p['gains'], inst['sigma'], inst['raw_blocks'],
                                       world['proj']))
    def mix(base):
      terms = [np.log(1 - pi) + logp(base)]
      terms += [np.log(pi * prior[d]) + logp(base + world['concepts'][d])
                for d in range(len(prior)) if prior[d] > 0]
      return logsumexp(terms)
    want = mix(inst['scene'] + world['concepts'][cls]) - mix(inst['scene'])
    assert llr[i] == pytest.approx(want, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize('variant', ['v1', 'v3'])   # TINY's two blocks (v2 has one)
def test_generator_is_deterministic_and_shaped(variant):
  a = list(gen.generate(variant, ROWS, **TINY))
  b = list(gen.generate(variant, ROWS, **TINY))
  assert [s for s, _, _ in a] == ['train'] * 2 + ['val'] * 2 + ['test'] * 2
  for (_, x, ox), (_, y, oy) in zip(a, b):
    np.testing.assert_array_equal(x['video'], y['video'])
    np.testing.assert_array_equal(x['query'], y['query'])
    assert ox == oy
  ex = a[4][1]
  assert ex['video'].shape == (15, 52) and ex['query'].shape[1] == 16
  # L2-normalized per block, as real features.
  np.testing.assert_allclose(np.linalg.norm(ex['video'][:, :40], axis=1), 1, rtol=1e-5)
  # The val paraphrases share one event: same video, same oracle windows.
  assert a[2][1]['row']['vid'] == a[3][1]['row']['vid']
  assert a[2][2]['pred_relevant_windows'] == a[3][2]['pred_relevant_windows']
  assert a[0][2] is None   # no oracle on train


def test_oracle_recovers_clean_event():
  """With almost no noise the oracle's best window is the event to the clip."""
  p = dict(TINY, noise=(1e-3, 1e-3), noise_spread=0.0, jitter_rel=0.0, jitter_clips=0.0)
  out = [o for s, _, o in gen.generate('v1', ROWS, **p) if s == 'test']
  assert out[0]['pred_relevant_windows'][0][:2] == [2.0, 9.0]
  assert out[1]['pred_relevant_windows'][0][:2] == [10.0, 14.0]


def test_shipped_table_loads_and_matches_full_files():
  rows = benchmark_rows.load_rows()
  assert {r['src'] for r in rows} == {'charades', 'qvhighlights', 'tacos'}
  groups = benchmark_rows.group_instances(rows)
  assert sum(len(r) for _, r in groups['train']) >= 3000
  assert not ({i for i, _ in groups['train']} & {i for i, _ in groups['val']})
  from tests.data_fixtures import ANNOTATIONS as full
  if not os.path.isdir(os.path.join(full, 'tacos')):
    pytest.skip('full annotation files not present')
  assert benchmark_rows.select_rows(full) == rows
