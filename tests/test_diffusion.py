"""Diffusion: schedules vs closed form, q_sample statistics, DDIM, target padding."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from momentdiff_jax.ops import diffusion as dif


def dcfg(**kw):
  c = ml_collections.ConfigDict(dict(
      num_spans=5, timesteps=1000, schedule='cosine', cosine_s=0.008, scale=2.0,
      sampling_steps=10, eta=1.0, placeholder_std=1.0 / 6.0, min_width=0.01))
  c.update(kw)
  return c


def test_cosine_schedule_closed_form():
  T, s = 1000, 0.008
  sch = dif.make_schedule(dcfg())
  f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
  t = np.arange(T + 1, dtype=np.float64)
  abar = f(t) / f(0)
  betas = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
  np.testing.assert_allclose(sch.betas, betas, rtol=1e-5, atol=1e-7)
  # Without the clip (only the last beta is clipped), abar_t is the closed form.
  np.testing.assert_allclose(sch.alphas_cumprod[:-1], abar[1:-1], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(sch.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-5,
                             atol=1e-9)
  np.testing.assert_allclose(sch.sqrt_alphas_cumprod ** 2 + sch.sqrt_one_minus_alphas_cumprod ** 2,
                             1.0, atol=1e-6)
  assert float(sch.betas.max()) == pytest.approx(0.999)
  assert sch.num_timesteps == T


def test_linear_schedule():
  sch = dif.make_schedule(dcfg(schedule='linear', timesteps=100))
  np.testing.assert_allclose(sch.betas, np.linspace(1e-4, 0.02, 100), rtol=1e-5)
  np.testing.assert_allclose(sch.alphas_cumprod, np.cumprod(1 - np.linspace(1e-4, 0.02, 100)),
                             rtol=1e-5)


def test_signal_mapping():
  x = jnp.array([0.0, 0.25, 1.0])
  np.testing.assert_allclose(dif.spans_to_signal(x, 2.0), [-2.0, -1.0, 2.0])
  np.testing.assert_allclose(dif.signal_to_spans(jnp.array([-5.0, -1.0, 0.0, 3.0]), 2.0),
                             [0.0, 0.25, 0.5, 1.0])


def test_q_sample_statistics():
  sch = dif.make_schedule(dcfg())
  n = 200_000
  t = jnp.array([0, 300, 999])
  x0 = jnp.broadcast_to(jnp.array([1.5, -0.5])[None, None], (3, 1, 2))
  noise = jax.random.normal(jax.random.PRNGKey(0), (n, 3, 1, 2))
  xt = jax.vmap(lambda e: dif.q_sample(sch, x0, t, e))(noise)
  ac = np.asarray(sch.alphas_cumprod)[np.asarray(t)]
  mean = np.sqrt(ac)[:, None, None] * np.asarray(x0)
  var = np.broadcast_to((1 - ac)[:, None, None], mean.shape)
  np.testing.assert_allclose(xt.mean(0), mean, atol=5 * np.sqrt(var.max() / n) + 1e-6)
  np.testing.assert_allclose(xt.var(0), var, rtol=0.02, atol=1e-6)


def test_ddim_times_match_release():
  # torch.linspace(-1, 999, 11).int() reversed.
  np.testing.assert_array_equal(dif.ddim_times(1000, 10)[:, 0], np.arange(999, -1, -100))
  np.testing.assert_array_equal(dif.ddim_times(1000, 10)[-1], [99, -1])
  np.testing.assert_array_equal(dif.ddim_times(1000, 1), [[999, -1]])
  np.testing.assert_array_equal(dif.ddim_times(1000, 3), [[999, 665], [665, 332], [332, -1]])
  full = dif.ddim_times(1000, 1000)
  np.testing.assert_array_equal(full[:, 0], np.arange(999, -1, -1))
  np.testing.assert_array_equal(full[:, 1], np.arange(998, -2, -1))


def test_ddim_step_deterministic_chain_recovers_x0():
  # eta = 0, oracle x0 along the whole release time grid: x_t stays on the line
  # sqrt(abar) x0 + sqrt(1 - abar) eps, and the end point is x0.
  sch = dif.make_schedule(dcfg())
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  x0 = jax.random.uniform(k1, (2, 5, 2), minval=-2, maxval=2)
  eps = jax.random.normal(k2, x0.shape)
  x = dif.q_sample(sch, x0, jnp.array([999, 999]), eps)
  for t, tn in dif.ddim_times(1000, 50):
    x, e = dif.ddim_step(sch, x, x0, int(t), int(tn), 0.0, jnp.zeros_like(x))
    np.testing.assert_allclose(e, eps, atol=2e-3)
    if tn >= 0:
      np.testing.assert_allclose(x, dif.q_sample(sch, x0, jnp.array([tn, tn]), eps), atol=1e-4)
  np.testing.assert_allclose(x, x0, atol=1e-6)


def test_ddim_step_stochastic_marginal():
  # eta = 1 with an oracle keeps the marginal N(sqrt(abar') x0, 1 - abar').
  sch = dif.make_schedule(dcfg())
  n = 100_000
  x0 = jnp.full((n, 1, 2), 0.7)
  k1, k2 = jax.random.split(jax.random.PRNGKey(2))
  xt = dif.q_sample(sch, x0, jnp.full((n,), 600), jax.random.normal(k1, x0.shape))
  xn, _ = dif.ddim_step(sch, xt, x0, 600, 400, 1.0, jax.random.normal(k2, x0.shape))
  a = float(sch.alphas_cumprod[400])
  assert float(xn.mean()) == pytest.approx(np.sqrt(a) * 0.7, abs=0.01)
  assert float(xn.var()) == pytest.approx(1 - a, rel=0.02)


def test_ddim_sample_oracle_eta0():
  """Oracle x0-predictor, eta = 0: predictions are x0, and what the denoiser is fed at
  the last step is the deterministic DDIM point clamp(sqrt(a) x0 + sqrt(1-a) eps)."""
  sch = dif.make_schedule(dcfg())
  x0 = jax.random.uniform(jax.random.PRNGKey(3), (3, 5, 2), minval=0.05, maxval=0.95)
  fed = []

  def oracle(spans01, t):
    fed.append(t.shape)
    # logits echo the input so the test can see what the sampler fed in.
    return spans01, x0

  rng = jax.random.PRNGKey(4)
  spans, logits, traj = jax.jit(
      lambda r: dif.ddim_sample(oracle, r, x0.shape, sch, 10, 0.0, 2.0,
                                return_trajectory=True))(rng)
  np.testing.assert_allclose(spans, x0, atol=1e-6)
  assert traj.shape == (10, 3, 5, 2)
  np.testing.assert_allclose(traj, jnp.broadcast_to(x0, traj.shape), atol=1e-6)
  init_rng, _ = jax.random.split(rng)
  x_T = jax.random.normal(init_rng, x0.shape)
  a = sch.alphas_cumprod
  x0s = dif.spans_to_signal(x0, 2.0)
  eps = (x_T - jnp.sqrt(a[999]) * x0s) / jnp.sqrt(1 - a[999])
  x_last = jnp.sqrt(a[99]) * x0s + jnp.sqrt(1 - a[99]) * eps
  np.testing.assert_allclose(logits, dif.signal_to_spans(x_last, 2.0), atol=2e-4)
  assert fed == [(3,)] * len(fed) and len(fed) <= 2   # traced once (+ eval_shape)


@pytest.mark.parametrize('eta', [0.0, 1.0])
def test_ddim_one_step_is_one_denoiser_call(eta):
  sch = dif.make_schedule(dcfg())
  w = jax.random.normal(jax.random.PRNGKey(5), (2, 2))

  def denoise(spans01, t):
    h = jnp.tanh(spans01 @ w + t[:, None, None] / 1000.0)
    return h * 3.0, jax.nn.sigmoid(h)

  rng = jax.random.PRNGKey(6)
  spans, logits = dif.ddim_sample(denoise, rng, (4, 5, 2), sch, 1, eta, 2.0)
  init_rng, _ = jax.random.split(rng)
  x_T = jax.random.normal(init_rng, (4, 5, 2))
  ref_logits, ref_spans = denoise(dif.signal_to_spans(x_T, 2.0), jnp.full((4,), 999))
  np.testing.assert_allclose(spans, ref_spans, atol=1e-6)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-6)


@pytest.mark.parametrize('eta', [0.0, 1.0])
def test_ddim_row_keys_rows_equal_batches_of_one(eta):
  """row_keys: row b of a batch == the plain sampler on row b alone with key b."""
  sch = dif.make_schedule(dcfg())
  w = jax.random.normal(jax.random.PRNGKey(5), (2, 2))
  bias = jax.random.normal(jax.random.PRNGKey(7), (3, 1, 2))   # rows differ

  def denoiser(b):
    def denoise(spans01, t):
      h = jnp.tanh(spans01 @ w + b + t[:, None, None] / 1000.0)
      return h * 3.0, jax.nn.sigmoid(h)
    return denoise

  keys = jax.random.split(jax.random.PRNGKey(8), 3)
  spans, logits = dif.ddim_sample(denoiser(bias), keys, (3, 5, 2), sch, 4, eta, 2.0,
                                  row_keys=True)
  for r in range(3):
    s1, l1 = dif.ddim_sample(denoiser(bias[r:r + 1]), keys[r], (1, 5, 2), sch, 4, eta, 2.0)
    np.testing.assert_allclose(spans[r:r + 1], s1, atol=1e-6)
    np.testing.assert_allclose(logits[r:r + 1], l1, atol=1e-6)
  # Not merely equal to each other: the rows got different noise.
  assert not np.allclose(spans[0], spans[1])


def _identity_denoiser(n):
  """x_0 estimate = its input; spans 0, 2, 4, ... confident, the others not."""
  fg = jnp.where(jnp.arange(n) % 2 == 0, 5.0, -5.0)

  def denoise(spans01, t):
    logits = jnp.broadcast_to(jnp.stack([fg, -fg], -1), spans01.shape)
    return logits, spans01
  return denoise


def test_ddim_span_renewal_replaces_unconfident_spans_with_fresh_noise():
  """Renewal (DiffusionDet): after step 0, the unconfident (odd) spans restart from
  normal(fold_in(step 0's key, 1)); the confident ones are the unrenewed sampler's."""
  sch = dif.make_schedule(dcfg())
  shape, rng = (3, 6, 2), jax.random.PRNGKey(11)
  denoise = _identity_denoiser(6)
  plain, _ = dif.ddim_sample(denoise, rng, shape, sch, 2, 0.0, 2.0)
  renewed, _ = dif.ddim_sample(denoise, rng, shape, sch, 2, 0.0, 2.0, renew_threshold=0.5)
  _, loop_rng = jax.random.split(rng)
  fresh = jax.random.normal(jax.random.fold_in(jax.random.split(loop_rng, 2)[0], 1), shape)
  np.testing.assert_allclose(renewed[:, 0::2], plain[:, 0::2], atol=1e-6)
  np.testing.assert_allclose(renewed[:, 1::2], dif.signal_to_spans(fresh, 2.0)[:, 1::2],
                             atol=1e-6)
  assert not np.allclose(renewed[:, 1::2], plain[:, 1::2])
  # A threshold no span is below: the release's sampler, bit for bit.
  same, _ = dif.ddim_sample(denoise, rng, shape, sch, 2, 0.0, 2.0, renew_threshold=1e-9)
  np.testing.assert_array_equal(same, plain)
  # Per-row keys: row b with renewal still equals a batch of one with key b.
  keys = jax.random.split(jax.random.PRNGKey(12), 3)
  rows, _ = dif.ddim_sample(denoise, keys, shape, sch, 3, 1.0, 2.0, row_keys=True,
                            renew_threshold=0.5)
  one, _ = dif.ddim_sample(denoise, keys[1], (1, 6, 2), sch, 3, 1.0, 2.0,
                           renew_threshold=0.5)
  np.testing.assert_allclose(rows[1:2], one, atol=1e-6)


def test_prepare_targets():
  cfg = dcfg()
  n = 5
  b, m = 4000, 8
  rng = np.random.default_rng(0)
  tgt = np.stack([rng.uniform(0.1, 0.9, (b, m)), rng.uniform(0.05, 0.3, (b, m))], -1)
  tgt = tgt.astype(np.float32)
  counts = np.concatenate([np.zeros(b // 4), np.full(b // 4, 3), np.full(b // 4, 5),
                           np.full(b - 3 * (b // 4), 8)]).astype(int)
  mask = np.arange(m)[None] < counts[:, None]
  # Shuffle validity positions so that padding is not always trailing.
  perm = np.argsort(rng.uniform(size=(b, m)), axis=1)
  mask = np.take_along_axis(mask, perm, 1)
  x0 = np.asarray(jax.jit(lambda r, t, mk: dif.prepare_targets(r, t, mk, n, cfg))(
      jax.random.PRNGKey(0), tgt, mask))
  assert x0.shape == (b, n, 2)
  placeholders = []
  first_counts = np.zeros(m)
  for i in range(b):
    valid = tgt[i][mask[i]]
    k = len(valid)
    if k <= n:
      np.testing.assert_array_equal(x0[i, :k], valid)      # all GT, original order
      placeholders.append(x0[i, k:])
    else:
      # A subset of n distinct GT windows, in their original order.
      idx = [int(np.flatnonzero((valid == row).all(1))[0]) for row in x0[i]]
      assert sorted(idx) == idx and len(set(idx)) == n
      first_counts[idx[0]] += 1
  ph = np.concatenate(placeholders)
  assert ph[:, 1].min() >= cfg.min_width
  np.testing.assert_allclose(ph[:, 0].mean(), 0.5, atol=0.01)
  np.testing.assert_allclose(ph[:, 0].std(), 1 / 6, rtol=0.03)
  w = ph[:, 1]
  np.testing.assert_allclose(np.median(w), 0.5, atol=0.01)
  # Uniform subsets of 5 out of 8: P(first chosen = window 0) = 5/8.
  assert first_counts[0] / first_counts.sum() == pytest.approx(5 / 8, abs=0.05)


def test_diffuse_targets_shapes_and_range():
  cfg = dcfg()
  sch = dif.make_schedule(cfg)
  tgt = jnp.array([[[0.5, 0.2], [0.3, 0.1]]] * 3)
  mask = jnp.array([[1, 0], [1, 1], [0, 0]])
  xt, t, noise = dif.diffuse_targets(jax.random.PRNGKey(0), sch, tgt, mask, 5, cfg)
  assert xt.shape == (3, 5, 2) and t.shape == (3,) and t.dtype == jnp.int32
  assert noise.shape == (3, 5, 2)
  assert float(xt.min()) >= 0.0 and float(xt.max()) <= 1.0


def test_sample_timesteps_release_is_randint_and_power_has_its_cdf():
  from scipy import stats
  r = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(dif.sample_timesteps(r, 64, 1000),
                                jax.random.randint(r, (64,), 0, 1000))
  t = np.asarray(dif.sample_timesteps(r, 20000, 1000, 2.0))
  assert t.dtype == np.int32 and t.min() >= 0 and t.max() <= 999
  # P(t < x T) = x^2 for power 2 (floor shifts it by at most one step).
  ks = stats.kstest((t + 0.5) / 1000, lambda x: np.clip(x, 0, 1) ** 2)
  assert ks.pvalue > 1e-3, ks
  assert abs(t.mean() / 1000 - 2 / 3) < 0.01
