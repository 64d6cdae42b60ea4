"""Span diffusion as pure functions: schedules, target padding, q_sample, DDIM.

Follows the authors' release (momentdiff/transformer.py):
  * spans in [0, 1] (center, width) are mapped to the signal `(2x - 1) * scale`;
  * the denoiser never sees the raw signal: x_t is clamped to [-scale, scale] and
    mapped back to [0, 1] first (training and sampling alike);
  * the denoiser predicts x_0 (spans in [0, 1]); the sampler re-signals it, clamps it
    to [-scale, scale] and derives eps from the UNCLAMPED x_t;
  * the final prediction is the last step's denoiser output (class logits and spans);
    the DDIM update after the last step is never used.
"""
from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
  """Per-step diffusion constants, each `(T,)` float32 (index = step t in 0..T-1)."""
  betas: jnp.ndarray
  alphas_cumprod: jnp.ndarray
  alphas_cumprod_prev: jnp.ndarray
  sqrt_alphas_cumprod: jnp.ndarray
  sqrt_one_minus_alphas_cumprod: jnp.ndarray
  sqrt_recip_alphas_cumprod: jnp.ndarray
  sqrt_recipm1_alphas_cumprod: jnp.ndarray
  posterior_variance: jnp.ndarray

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> np.ndarray:
  """Nichol & Dhariwal cosine schedule, float64 as in the release. -> `(T,)`."""
  x = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64)
  ac = np.cos(((x / timesteps) + s) / (1 + s) * np.pi * 0.5) ** 2
  ac = ac / ac[0]
  betas = 1.0 - ac[1:] / ac[:-1]
  return np.clip(betas, 0.0, 0.999)


def linear_beta_schedule(timesteps: int, start: float = 1e-4,
                         end: float = 0.02) -> np.ndarray:
  """DDPM linear schedule (the release's commented-out option). -> `(T,)`."""
  return np.linspace(start, end, timesteps, dtype=np.float32).astype(np.float64)


def schedule_from_betas(betas: np.ndarray) -> Schedule:
  """All derived constants, computed in float64 on the host then cast to float32."""
  betas = np.asarray(betas, np.float64)
  ac = np.cumprod(1.0 - betas)
  ac_prev = np.concatenate([[1.0], ac[:-1]])
  arrays = dict(
      betas=betas,
      alphas_cumprod=ac,
      alphas_cumprod_prev=ac_prev,
      sqrt_alphas_cumprod=np.sqrt(ac),
      sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ac),
      sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
      sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1.0),
      posterior_variance=betas * (1.0 - ac_prev) / (1.0 - ac),
  )
  return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()})


def make_schedule(cfg) -> Schedule:
  """Schedule from `config.diffusion` (keys: schedule, timesteps, cosine_s)."""
  if cfg.schedule == 'cosine':
    betas = cosine_beta_schedule(cfg.timesteps, cfg.get('cosine_s', 0.008))
  elif cfg.schedule == 'linear':
    betas = linear_beta_schedule(cfg.timesteps)
  else:
    raise ValueError(f'unknown beta schedule {cfg.schedule!r}')
  return schedule_from_betas(betas)


def spans_to_signal(spans, scale: float):
  """[0, 1] spans -> diffusion signal in [-scale, scale]. `(..., 2)`."""
  return (spans * 2.0 - 1.0) * scale


def signal_to_spans(x, scale: float):
  """Diffusion signal -> [0, 1] spans, clamping to [-scale, scale] first. `(..., 2)`."""
  x = jnp.clip(x, -scale, scale)
  return (x / scale + 1.0) * 0.5


def _bcast(values, t, ndim):
  """Gather `values[t]` for t `(B,)` and reshape to `(B, 1, ..., 1)` (ndim dims)."""
  return values[t].reshape((t.shape[0],) + (1,) * (ndim - 1))


def q_sample(schedule: Schedule, x0_signal, t, noise):
  """Forward diffusion x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

  x0_signal `(B, N, 2)` (already `spans_to_signal`-ed), t `(B,)` int, noise like x0.
  Returns x_t `(B, N, 2)` (unclamped signal).
  """
  nd = x0_signal.ndim
  return (_bcast(schedule.sqrt_alphas_cumprod, t, nd) * x0_signal
          + _bcast(schedule.sqrt_one_minus_alphas_cumprod, t, nd) * noise)


def prepare_targets(rng, span_targets, span_mask, num_spans: int, cfg):
  """x_0 spans per example: its GT windows, padded with random placeholders.

  As the release's `prepare_diffusion_concat`: when an example has more than N valid
  windows a uniformly random subset of N is kept (in the original order); with fewer,
  the GT windows come first (original order) and are followed by placeholders whose
  center and width are both `N(0.5, placeholder_std)` with the width clipped to
  `>= min_width` (the center is not clipped). Static shapes only: the subset is the N
  smallest of uniform random keys over the valid slots.

  Args:
    rng: PRNG key.
    span_targets: `(B, M, 2)` GT (center, width) in [0, 1].
    span_mask: `(B, M)` 1/True for real GT windows.
    num_spans: N (static).
    cfg: `config.diffusion` (placeholder_std, min_width).
  Returns:
    x0 `(B, N, 2)` float32 spans in [0, 1] cw (placeholders may leave [0, 1]).
  """
  b, m, _ = span_targets.shape
  n = num_spans
  valid = span_mask > 0
  key_rng, ph_rng = jax.random.split(rng)
  # Subset choice: rank the valid slots by random keys; invalid slots rank last.
  keys = jnp.where(valid, jax.random.uniform(key_rng, (b, m)), 2.0)
  rank = jnp.argsort(jnp.argsort(keys, axis=-1), axis=-1)
  chosen = valid & (rank < n)
  # Order: chosen GT by original index, then the placeholders, then the rest.
  placeholders = (jax.random.normal(ph_rng, (b, n, 2)) * cfg.placeholder_std + 0.5)
  placeholders = placeholders.at[..., 1].set(
      jnp.maximum(placeholders[..., 1], cfg.min_width))
  candidates = jnp.concatenate(
      [span_targets.astype(jnp.float32), placeholders], axis=1)  # (B, M + N, 2)
  gt_order = jnp.where(chosen, jnp.arange(m), m + n + jnp.arange(m))
  ph_order = jnp.broadcast_to(m + jnp.arange(n), (b, n))
  order = jnp.argsort(jnp.concatenate([gt_order, ph_order], axis=1), axis=-1)[:, :n]
  return jnp.take_along_axis(candidates, order[..., None], axis=1)


def sample_timesteps(rng, batch: int, timesteps: int, power: float = 1.0):
  """Training time steps `(B,)` int32 in {0..T-1}.

  power 1 (the release): uniform. power p > 1: t = floor(T * u^(1/p)), u ~ U(0, 1),
  density proportional to t^(p-1): more of the high-noise steps, where the spans carry
  little of the GT and the denoiser must find the moment from the video and the query
  alone, as at the sampler's first step (noise-level emphasis: P2 weighting, Choi et al.
  CVPR 2022; timestep sampling, Esser et al. ICML 2024).
  """
  if power == 1.0:
    return jax.random.randint(rng, (batch,), 0, timesteps)
  u = jax.random.uniform(rng, (batch,))
  return jnp.minimum((timesteps * u ** (1.0 / power)).astype(jnp.int32), timesteps - 1)


def diffuse_targets(rng, schedule: Schedule, span_targets, span_mask,
                    num_spans: int, cfg):
  """The whole training-time corruption: what the denoiser is fed.

  prepare_targets -> signal -> q_sample at t ~ U{0..T-1} per example -> clamp and
  map back to [0, 1]. `cfg` is `config.diffusion` (scale, placeholder_std, min_width).
  Returns (x_t `(B, N, 2)` spans in [0, 1], t `(B,)` int32, noise `(B, N, 2)`).
  """
  b = span_targets.shape[0]
  r_x0, r_t, r_noise = jax.random.split(rng, 3)
  x0 = prepare_targets(r_x0, span_targets, span_mask, num_spans, cfg)
  t = jax.random.randint(r_t, (b,), 0, schedule.num_timesteps, dtype=jnp.int32)
  noise = jax.random.normal(r_noise, x0.shape)
  x_t = q_sample(schedule, spans_to_signal(x0, cfg.scale), t, noise)
  return signal_to_spans(x_t, cfg.scale), t, noise


def ddim_times(timesteps: int, steps: int) -> np.ndarray:
  """Release time pairs `(steps, 2)` int32: rows (t, t_next), t_next = -1 last.

  `torch.linspace(-1, T - 1, steps + 1)` (float32, torch's symmetric formula),
  truncated to int, reversed, then consecutive pairs.
  """
  if not 1 <= steps <= timesteps:
    raise ValueError(f'need 1 <= steps <= T, got steps={steps}, T={timesteps}')
  num = steps + 1
  start, end = np.float32(-1.0), np.float32(timesteps - 1)
  step = (end - start) / np.float32(num - 1)
  idx = np.arange(num)
  # torch fills the first half from the start and the second half from the end.
  vals = np.where(idx < num // 2, start + step * idx.astype(np.float32),
                  end - step * (num - 1 - idx).astype(np.float32)).astype(np.float32)
  times = np.trunc(vals).astype(np.int32)[::-1]
  return np.stack([times[:-1], times[1:]], axis=1)


def ddim_step(schedule: Schedule, x_t, x0_signal, t, t_next, eta: float, noise):
  """One DDIM update (Song et al. Eq. 12, eta-scaled sigma) on the signal.

  x_t `(B, N, 2)` current (unclamped) signal, x0_signal `(B, N, 2)` predicted x_0
  signal, t / t_next int scalars or `(B,)` (t_next < 0 = past the end: returns x_0),
  noise `(B, N, 2)`. Returns (x_next `(B, N, 2)`, eps `(B, N, 2)`).
  """
  shape = (x_t.shape[0],) + (1,) * (x_t.ndim - 1)
  t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), shape)
  t_next = jnp.broadcast_to(jnp.asarray(t_next, jnp.int32), shape)
  eps = ((schedule.sqrt_recip_alphas_cumprod[t] * x_t - x0_signal)
         / schedule.sqrt_recipm1_alphas_cumprod[t])
  a = schedule.alphas_cumprod[t]
  # The release indexes alphas_cumprod[-1] here (Python wraparound) but never uses
  # the result; abar = 1 (sigma = 0, x_next = x_0) is the meaningful end point.
  a_next = jnp.where(t_next >= 0, schedule.alphas_cumprod[jnp.maximum(t_next, 0)], 1.0)
  var = eta ** 2 * (1.0 - a / a_next) * (1.0 - a_next) / (1.0 - a)
  sigma = jnp.sqrt(jnp.maximum(var, 0.0))
  c = jnp.sqrt(jnp.maximum(1.0 - a_next - sigma ** 2, 0.0))
  x_next = x0_signal * jnp.sqrt(a_next) + c * eps + sigma * noise
  return x_next, eps


def foreground_prob(logits) -> jnp.ndarray:
  """Class logits `(..., 2)` -> probability of the foreground class (index 0), float32."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 0]


DenoiseFn = Callable[[jnp.ndarray, jnp.ndarray], Tuple[jnp.ndarray, jnp.ndarray]]


def _row_normal(keys, shape, dtype=jnp.float32):
  """(B,) keys -> (B, *shape[1:]) normals, row b drawn from keys[b] alone."""
  return jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(keys)


def ddim_sample(denoise_fn: DenoiseFn, rng, shape, schedule: Schedule, steps: int,
                eta: float, scale: float, return_trajectory: bool = False,
                row_keys: bool = False, self_condition: bool = False,
                renew_threshold: float = 0.0):
  """DDIM sampler from N(0, I), one `lax.scan` over the `steps` (static) updates.

  Args:
    denoise_fn: `(spans01 (B, N, 2) in [0, 1], t (B,) int32) -> (logits (B, N, 2),
      spans (B, N, 2))`: class logits and predicted x_0 (center, width) in [0, 1] of
      the final decoder layer. The condition must be closed over, computed outside.
    rng: PRNG key; split as `init_rng, loop_rng = split(rng)`, x_T =
      `normal(init_rng, shape)`, step i uses `split(loop_rng, steps)[i]`.
    shape: (B, N, 2).
    schedule: `Schedule` (T = its length).
    steps: number of denoiser calls (static).
    eta: DDIM eta (1.0 = release default, stochastic).
    scale: signal scale lambda.
    return_trajectory: also return the predicted x_0 spans of every step.
    row_keys: `rng` holds one key per row, (B,) keys: row b's noise is drawn from
      rng[b] exactly as a batch of one with that key draws it (split as above,
      shapes (1, N, 2)), so a row's result does not depend on its batchmates.
    self_condition: call `denoise_fn(spans01, t, prev)` with the previous step's x_0
      estimate (zeros at the first step), as Chen et al.'s self-conditioning.
    renew_threshold: span renewal (DiffusionDet, Chen et al. ICCV 2023): after each
      step, a span whose foreground probability (softmax of its logits, class 0) is
      below this is replaced by fresh N(0, I) noise drawn from `fold_in(key, 1)` of
      the step's key, so spans that found nothing search again instead of following
      their x_0 estimate. 0 (static): off, the release's sampler unchanged.
  Returns:
    (spans `(B, N, 2)`, logits `(B, N, 2)`) of the last step, plus the trajectory
    `(steps, B, N, 2)` (predicted x_0 spans in [0, 1] per step) when requested.
  """
  b = shape[0]
  times = jnp.asarray(ddim_times(schedule.num_timesteps, steps))
  if row_keys:
    # Threefry draws the same numbers for shape (N, 2) as for (1, N, 2): row b equals
    # the unbatched sampler run with rng[b].
    pairs = jax.vmap(jax.random.split)(rng)                      # (B, 2) keys
    x_init = _row_normal(pairs[:, 0], shape)
    loop_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, steps))(pairs[:, 1]),
                             0, 1)                                # (steps, B) keys
    noise_fn = lambda key, dtype: _row_normal(key, shape, dtype)  # pylint: disable=unnecessary-lambda-assignment
    renew_key = jax.vmap(lambda k: jax.random.fold_in(k, 1))
  else:
    init_rng, loop_rng = jax.random.split(rng)
    x_init = jax.random.normal(init_rng, shape, jnp.float32)
    loop_keys = jax.random.split(loop_rng, steps)
    noise_fn = lambda key, dtype: jax.random.normal(key, shape, dtype)  # pylint: disable=unnecessary-lambda-assignment
    renew_key = lambda k: jax.random.fold_in(k, 1)  # pylint: disable=unnecessary-lambda-assignment

  def step(carry, xs):
    x_t, _, prev = carry
    (t, t_next), key = xs
    args = (signal_to_spans(x_t, scale), jnp.full((b,), t, jnp.int32))
    logits, spans = denoise_fn(*args, prev) if self_condition else denoise_fn(*args)
    x0 = jnp.clip(spans_to_signal(spans, scale), -scale, scale)
    noise = noise_fn(key, x_t.dtype)
    x_next, _ = ddim_step(schedule, x_t, x0, t, t_next, eta, noise)
    if renew_threshold > 0:
      prob = foreground_prob(logits)                                           # (B, N)
      fresh = noise_fn(renew_key(key), x_t.dtype)
      x_next = jnp.where((prob < renew_threshold)[..., None], fresh, x_next)
    return (x_next, logits, spans), (spans if return_trajectory else None)

  # The carry holds the last step's outputs; their dtypes (e.g. bfloat16) come from
  # an abstract evaluation so the scan carry type is stable.
  probe = (x_init, jnp.zeros((b,), jnp.int32)) + ((x_init,) if self_condition else ())
  out_struct = jax.eval_shape(denoise_fn, *probe)
  init = (x_init,) + tuple(jnp.zeros(o.shape, o.dtype) for o in out_struct)
  xs = ((times[:, 0], times[:, 1]), loop_keys)
  (_, logits, spans), traj = jax.lax.scan(step, init, xs)
  if return_trajectory:
    return spans, logits, traj
  return spans, logits
