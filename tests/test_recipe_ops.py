"""Recipe candidates' pure pieces against closed forms and brute force."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from momentdiff_jax.ops import recipe_ops


def test_ema_update_matches_closed_form():
  """After T updates, ema = prod(d) * ema_0 + sum_t (1 - d_t) prod_{s > t} d_s p_t."""
  rng = np.random.RandomState(0)
  decay, steps = 0.9, 30
  p = rng.randn(steps, 4)
  ema0 = rng.randn(4)
  ema = {'w': jnp.asarray(ema0)}
  for t in range(steps):
    ema = recipe_ops.ema_update(ema, {'w': jnp.asarray(p[t])}, t, decay)
  d = np.array([min(decay, (1 + t) / (10 + t)) for t in range(steps)])
  tail = np.array([np.prod(d[t + 1:]) for t in range(steps)])
  want = np.prod(d) * ema0 + ((1 - d) * tail) @ p
  np.testing.assert_allclose(np.asarray(ema['w']), want, rtol=1e-5, atol=1e-6)


def test_with_ema_keeps_average_of_updated_params():
  tx = recipe_ops.with_ema(optax.sgd(0.5), 0.99)
  params = {'w': jnp.array([1.0, -2.0])}
  state = tx.init(params)
  hist = []
  for t in range(3):
    grads = {'w': params['w'] * (t + 1)}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    hist.append(np.asarray(params['w']))
  ema = np.array([1.0, -2.0])
  for t, p in enumerate(hist):
    d = min(0.99, (1 + t) / (10 + t))
    ema = d * ema + (1 - d) * p
  np.testing.assert_allclose(np.asarray(state.ema['w']), ema, rtol=1e-6)
  assert int(state.count) == 3
  assert recipe_ops.eval_params(params, state) is state.ema
  assert recipe_ops.eval_params(params, ()) is params


@pytest.mark.parametrize('step', [0, 4, 9, 10, 55, 100, 150])
def test_warmup_cosine_values(step):
  base, warm, total, final = 1e-3, 10, 100, 0.01
  if step < warm:
    want = base * (step + 1) / warm
  else:
    frac = min(1.0, (step - warm) / (total - warm))
    want = base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac)))
  got = float(recipe_ops.warmup_cosine(base, warm, total, final)(step))
  assert got == pytest.approx(want, rel=1e-5)


def test_warmup_step_drops_values():
  sched = recipe_ops.warmup_step_drops(2e-4, 5, {20: 0.1})
  for step, want in [(0, 2e-4 / 5), (4, 2e-4), (19, 2e-4), (20, 2e-5), (40, 2e-5)]:
    assert float(sched(step)) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize('average', [True, False])
def test_fuse_spans_matches_numpy_loop(average):
  rng = np.random.RandomState(3)
  b, n, k = 4, 15, 6
  # Clustered spans: 3 centers, jittered draws around each, plus loners.
  centers = rng.rand(b, 3, 2) * [0.6, 0.3] + [0.2, 0.1]
  spans = centers[:, rng.randint(0, 3, n)] + 0.02 * rng.randn(b, n, 2)
  spans[:, -3:] = rng.rand(b, 3, 2) * [1, 0.2] + [0, 0.05]
  scores = rng.rand(b, n)
  got_sp, got_sc = jax.jit(lambda s, c: recipe_ops.fuse_spans(s, c, 0.6, k, average))(
      spans.astype(np.float32), scores.astype(np.float32))
  want_sp, want_sc = recipe_ops.fuse_spans_reference(spans, scores, 0.6, k, average)
  np.testing.assert_allclose(np.asarray(got_sc), want_sc, rtol=1e-6)
  live = want_sc >= 0
  np.testing.assert_allclose(np.asarray(got_sp)[live], want_sp[live], atol=1e-5)
  assert (want_sc < 0).any() or k <= n   # some queries run out of clusters


def test_fuse_spans_single_cluster_is_weighted_mean():
  spans = np.array([[[0.5, 0.2], [0.52, 0.2], [0.5, 0.24]]], np.float32)
  scores = np.array([[0.9, 0.6, 0.3]], np.float32)
  sp, sc = recipe_ops.fuse_spans(spans, scores, 0.5, 2)
  se = np.stack([spans[0, :, 0] - spans[0, :, 1] / 2, spans[0, :, 0] + spans[0, :, 1] / 2], 1)
  f = (scores[0, :, None] * se).sum(0) / scores[0].sum()
  np.testing.assert_allclose(np.asarray(sp[0, 0]), [(f[0] + f[1]) / 2, f[1] - f[0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(sc[0]), [0.9, -1.0])


def test_with_ema_state_can_be_donated_with_the_params():
  """Eager init, then a step donating (params, state): the EMA holds its own buffers
  (benchmarks/accuracy.py's timing donated one buffer twice before)."""
  tx = recipe_ops.with_ema(optax.sgd(0.5), 0.99)
  params = {'w': jnp.arange(3.0)}
  state = tx.init(params)

  def step(p, s):
    g = jax.tree.map(jnp.ones_like, p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  p2, s2 = jax.jit(step, donate_argnums=(0, 1))(params, state)
  np.testing.assert_allclose(np.asarray(p2['w']), np.arange(3.0) - 0.5)
  assert s2.ema['w'].shape == (3,)
