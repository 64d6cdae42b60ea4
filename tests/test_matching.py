"""Exact assignment vs scipy on every size up to 20 x 20, under jit and vmap."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_lsa

from momentdiff_jax.ops import matching

PER_SIZE = 10     # matrices per (N, M) pair -> 2,100 in total


def _cases(rng, n):
  """(PER_SIZE * n) cost matrices (n, n) with column masks of every M in 1..n."""
  costs, masks = [], []
  for m in range(1, n + 1):
    for r in range(PER_SIZE):
      kind = r % 4
      if kind == 0:
        c = rng.uniform(0, 1, (n, n))
      elif kind == 1:
        c = rng.integers(0, 4, (n, n)).astype(float)      # many ties
      elif kind == 2:
        c = rng.normal(0, 5, (n, n))                      # negative costs
      else:
        c = rng.integers(-2, 2, (n, n)).astype(float) * 0.5  # ties, negative
      mask = np.zeros(n, bool)
      if r % 2 == 0:
        mask[:m] = True                                   # trailing padding
      else:
        mask[rng.choice(n, m, replace=False)] = True      # scattered padding
      costs.append(c)
      masks.append(mask)
  return np.asarray(costs, np.float32), np.asarray(masks)


def test_equal_optimal_cost_to_scipy_all_sizes():
  rng = np.random.default_rng(0)
  solve = jax.jit(jax.vmap(matching.linear_sum_assignment))
  total = 0
  for n in range(1, 21):
    costs, masks = _cases(rng, n)
    row_for_col, col_for_row = map(np.asarray, solve(costs, masks))
    for c, mk, rfc, cfr in zip(costs, masks, row_for_col, col_for_row):
      cols = np.flatnonzero(mk)
      r_ref, c_ref = scipy_lsa(c[:, cols].astype(np.float64))
      ref = c[:, cols][r_ref, c_ref].sum()
      # Valid columns get distinct rows; padded columns none; both views agree.
      assert np.all(rfc[~mk] == -1)
      rows = rfc[mk]
      assert np.all(rows >= 0) and len(set(rows.tolist())) == len(rows)
      assert np.all(cfr[rows] == cols)
      assert (cfr >= 0).sum() == len(cols)
      got = c[rows, cols].astype(np.float64).sum()
      np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
      total += 1
  assert total >= 2000


def test_non_square_and_default_mask():
  rng = np.random.default_rng(1)
  c = rng.uniform(size=(20, 5)).astype(np.float32)
  rfc, cfr = jax.jit(matching.linear_sum_assignment)(c)
  r, cidx = scipy_lsa(c)
  np.testing.assert_allclose(c[np.asarray(rfc), np.arange(5)].sum(), c[r, cidx].sum(), rtol=1e-6)
  # All columns masked: nothing assigned.
  rfc, cfr = matching.linear_sum_assignment(c, jnp.zeros(5, bool))
  assert np.all(np.asarray(rfc) == -1) and np.all(np.asarray(cfr) == -1)
  # NaN costs do not hang the solver.
  rfc, _ = matching.linear_sum_assignment(jnp.full((4, 3), jnp.nan))
  assert sorted(np.asarray(rfc).tolist()) == sorted(set(np.asarray(rfc).tolist()))


def np_match_cost(logits, spans, tgt):
  """Release HungarianMatcher cost for one example in numpy."""
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p = p / p.sum(-1, keepdims=True)
  l1 = np.abs(spans[:, None] - tgt[None]).sum(-1)
  a = np.stack([spans[:, 0] - spans[:, 1] / 2, spans[:, 0] + spans[:, 1] / 2], -1)
  b = np.stack([tgt[:, 0] - tgt[:, 1] / 2, tgt[:, 0] + tgt[:, 1] / 2], -1)
  inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
  union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None] - inter
  encl = np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 0], b[None, :, 0])
  giou = inter / union - (encl - union) / encl
  return 10 * l1 - 1 * giou - 4 * p[:, :1]


def test_match_batch_vs_scipy():
  rng = np.random.default_rng(2)
  b, n, m = 16, 10, 5
  logits = rng.normal(size=(b, n, 2)).astype(np.float32)
  spans = np.stack([rng.uniform(0.2, 0.8, (b, n)), rng.uniform(0.05, 0.4, (b, n))], -1).astype(np.float32)
  tgt = np.stack([rng.uniform(0.2, 0.8, (b, m)), rng.uniform(0.05, 0.4, (b, m))], -1).astype(np.float32)
  mask = (np.arange(m)[None] < rng.integers(0, m + 1, b)[:, None]).astype(np.float32)
  cfg = ml_collections.ConfigDict(dict(cost_span=10.0, cost_giou=1.0, cost_class=4.0))
  out = jax.jit(lambda *a: matching.match_batch(*a, cfg))(logits, spans, tgt, mask)
  assert out['pred_idx_for_tgt'].shape == (b, m) and out['matched'].shape == (b, n)
  for i in range(b):
    k = int(mask[i].sum())
    c = np_match_cost(logits[i].astype(np.float64), spans[i].astype(np.float64),
                      tgt[i, :k].astype(np.float64))
    r, cc = scipy_lsa(c)
    rows = np.asarray(out['pred_idx_for_tgt'][i, :k])
    np.testing.assert_allclose(c[rows, np.arange(k)].sum(), c[r, cc].sum(), rtol=1e-5, atol=1e-5)
    assert int(out['matched'][i].sum()) == k
    assert np.all(np.asarray(out['pred_idx_for_tgt'][i, k:]) == -1)
