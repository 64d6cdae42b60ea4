"""Fixed (parameter-free) embeddings: clip positions, span positions, diffusion steps.

All are computed in float32 (positions near 2*pi need the mantissa) and cast by the
caller.
"""
import math

import jax
import jax.numpy as jnp


def _interleaved_sine(x: jax.Array, num_feats: int, temperature: float = 10000.0) -> jax.Array:
  """(...,) -> (..., num_feats): [sin(x/w_0), cos(x/w_0), sin(x/w_1), cos(x/w_1), ...].

  w_j = temperature ** (2j / num_feats), the DETR sine layout (even features sine, odd
  features cosine of the same frequency).
  """
  i = jnp.arange(num_feats, dtype=jnp.float32)
  dim_t = temperature ** (2.0 * jnp.floor(i / 2.0) / num_feats)
  p = x[..., None] / dim_t                                  # (..., F)
  out = jnp.stack([jnp.sin(p[..., 0::2]), jnp.cos(p[..., 1::2])], axis=-1)
  return out.reshape(p.shape)


def video_position_embedding(mask: jax.Array, num_feats: int) -> jax.Array:
  """Normalized sine embedding of clip positions (release: PositionEmbeddingSine).

  Args:
    mask: (B, Lv), 1 for real clips (a prefix of each row).
    num_feats: D.
  Returns:
    (B, Lv, D). Position of clip i is cumsum(mask)_i / (number of real clips) * 2*pi,
    so a video's embedding does not depend on how far it is padded.
  """
  x = jnp.cumsum(mask.astype(jnp.float32), axis=1)
  x = x / (x[:, -1:] + 1e-6) * (2.0 * math.pi)
  return _interleaved_sine(x, num_feats)


def span_sine_embedding(spans: jax.Array, num_feats: int) -> jax.Array:
  """Sine embedding of (center, width) (release: gen_sineembed_for_position).

  Args:
    spans: (B, N, 2) normalized (center, width).
    num_feats: features per coordinate; the release hard-codes 128 (= D / 2 at D 256),
      here D / 2 so that other hidden sizes work and D 256 is the release exactly.
  Returns:
    (B, N, 2 * num_feats): [center features, width features].
  """
  s = spans.astype(jnp.float32) * (2.0 * math.pi)
  return jnp.concatenate([_interleaved_sine(s[..., 0], num_feats),
                          _interleaved_sine(s[..., 1], num_feats)], axis=-1)


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal step embedding (release: SinusoidalPositionEmbeddings).

  Args:
    t: (B,) integer steps.
  Returns:
    (B, dim): [sin(t f_0..f_{h-1}), cos(t f_0..f_{h-1})], f_j = 10000^(-j/(h-1)), h = dim/2.
  """
  half = dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000.0) / (half - 1)))
  arg = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)
