"""Video Moment Denoiser (release: `DiffDecoder` / `DiffDecoderLayer`).

Split in two so sampling does not redo condition work at every step:
  `prepare(memory, pos, mask)`  per layer: keys [F proj (+ key pos in layer 0) | key pos]
                                and values F proj, head-split; once per query.
  `__call__(cache, spans, t)`   the N query rows only; once per denoising step.

Not reproduced from the release, because it never calls them: the decoder
self-attention (`sa_*`, `self_attn`, `norm1`), the box MLP `bbox_embed`, the anchor
head `ref_anchor_head`. The converter lists their tensors as skipped.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from momentdiff_jax.model.layers import (MLP, Dropout, Linear, PReLU, attention, layer_norm,
                                         prelu_ffn, xavier_uniform)
from momentdiff_jax.model.position import span_sine_embedding, timestep_embedding

Dtype = Any
Cache = dict  # {'layers': [{'key': (B, Lv, H, 2D/H), 'value': (B, Lv, H, D/H)}, ...], 'mask': (B, Lv)}


def clamp_spans(spans: jax.Array, eps: float = 1e-3) -> jax.Array:
  """The release's `inverse_sigmoid(span).sigmoid()`, in closed form.

  sigmoid(log(a / b)) = a / (a + b) with a = max(x, eps), b = max(1 - x, eps) after
  clipping x to [0, 1]: identity on [eps, 1 - eps], close to eps / 1 - eps outside.
  """
  x = jnp.clip(spans.astype(jnp.float32), 0.0, 1.0)
  a = jnp.maximum(x, eps)
  b = jnp.maximum(1.0 - x, eps)
  return a / (a + b)


def _heads(x: jax.Array, num_heads: int) -> jax.Array:
  """(B, L, D) -> (B, L, H, D/H)."""
  return x.reshape(x.shape[:2] + (num_heads, -1))


class CrossAttention(nn.Module):
  """The release's custom MultiheadAttention(2D, H, vdim=D): no in-projection (the layer
  projects q/k/v itself), softmax over keys scaled by (2D/H)^-0.5, dropout on the
  weights, then `out_proj` Linear(D, D) with zero-initialized bias."""
  dim: int
  dropout: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q, k, v, key_mask, train: bool) -> jax.Array:
    out = attention(q, k, v, key_mask, Dropout(self.dropout, name='attn_drop'), train)
    return Linear(self.dim, kernel_init=xavier_uniform, bias_init='zeros', dtype=self.dtype,
                  name='out_proj')(out)


class DecoderLayer(nn.Module):
  """Intensity-aware (conditional-DETR style) cross-attention + PReLU FFN, post-norm.

  `is_first`: only the first layer adds the projected query position to the content
  query and the key position to the content key (release: keep_query_pos=False, so
  later layers have no `ca_qpos_proj`).
  """
  dim: int
  num_heads: int
  ffn_dim: int
  dropout: float
  is_first: bool
  dtype: Dtype = jnp.float32

  def setup(self):
    lin = lambda d: Linear(d, kernel_init=xavier_uniform, dtype=self.dtype)
    self.ca_qcontent_proj = lin(self.dim)
    if self.is_first:
      self.ca_qpos_proj = lin(self.dim)
    self.ca_kcontent_proj = lin(self.dim)
    self.ca_kpos_proj = MLP(self.dim, self.dim, 3, dtype=self.dtype)
    self.ca_v_proj = lin(self.dim)
    self.ca_qpos_sine_proj = lin(self.dim)
    self.cross_attn = CrossAttention(self.dim, self.dropout, self.dtype)
    self.linear1 = lin(self.ffn_dim)
    self.linear2 = lin(self.dim)
    self.norm2 = layer_norm(self.dtype)
    self.norm3 = layer_norm(self.dtype)
    self.activation = PReLU(self.dtype)
    self.drop = Dropout(self.dropout)
    self.drop2 = Dropout(self.dropout)
    self.drop3 = Dropout(self.dropout)

  def prepare(self, memory: jax.Array, pos: jax.Array) -> dict:
    """memory, pos (B, Lv, D) -> {'key': (B, Lv, H, 2D/H), 'value': (B, Lv, H, D/H)}.

    The key of head h is [content key_h | key position_h], matching the query layout.
    """
    k_pos = self.ca_kpos_proj(pos)
    k = self.ca_kcontent_proj(memory)
    if self.is_first:
      k = k + k_pos
    h = self.num_heads
    key = jnp.concatenate([_heads(k, h), _heads(k_pos, h)], axis=-1)
    return {'key': key, 'value': _heads(self.ca_v_proj(memory), h)}

  def __call__(self, tgt: jax.Array, cache: dict, mask: jax.Array, query_pos: jax.Array,
               query_sine: jax.Array, train: bool) -> jax.Array:
    """tgt (B, N, D) content; query_pos (B, N, D); query_sine (B, N, D) -> (B, N, D)."""
    det = not train
    q = self.ca_qcontent_proj(tgt)
    if self.is_first:
      q = q + self.ca_qpos_proj(query_pos)
    h = self.num_heads
    q = jnp.concatenate([_heads(q, h), _heads(self.ca_qpos_sine_proj(query_sine), h)], axis=-1)
    a = self.cross_attn(q, cache['key'], cache['value'], mask, train)
    tgt = self.norm2(tgt + self.drop2(a, deterministic=det))
    f = prelu_ffn(tgt, self.linear1, self.activation, self.linear2, self.drop, det)
    return self.norm3(tgt + self.drop3(f, deterministic=det))


class Denoiser(nn.Module):
  """The decoder stack with its span / step embeddings (release: `diffusion_decoder`)."""
  num_layers: int
  dim: int
  num_heads: int
  ffn_dim: int
  dropout: float
  dtype: Dtype = jnp.float32
  # Self-conditioning (Chen et al. 2022, "Analog Bits"): the previous estimate of x_0
  # enters the content query through a zero-initialized projection (candidate 'selfcond';
  # absent from the release's parameters when off).
  self_condition: bool = False

  def setup(self):
    if self.self_condition:
      self.self_cond_proj = Linear(self.dim, kernel_init=nn.initializers.zeros,
                                   bias_init='zeros', dtype=self.dtype)
    self.layers = [DecoderLayer(self.dim, self.num_heads, self.ffn_dim, self.dropout,
                                is_first=(i == 0), dtype=self.dtype)
                   for i in range(self.num_layers)]
    self.query_scale = MLP(self.dim, self.dim, 2, dtype=self.dtype)
    self.ref_point_head = MLP(self.dim, self.dim, 1, dtype=self.dtype)
    self.noise_embed = MLP(self.dim, self.dim, 1, dtype=self.dtype)
    self.norm = layer_norm(self.dtype)

  def prepare(self, memory: jax.Array, pos: jax.Array, mask: jax.Array) -> Cache:
    """memory, pos (B, Lv, D) (video tokens only, no global token); mask (B, Lv)."""
    return {'layers': [layer.prepare(memory, pos) for layer in self.layers], 'mask': mask}

  def __call__(self, cache: Cache, spans: jax.Array, t: jax.Array, train: bool,
               prev_spans=None) -> jax.Array:
    """spans (B, N, 2) in [0, 1]; t (B,) int -> (Ld, B, N, D), each layer after the shared norm.

    The spans stay fixed across layers (no iterative refinement in the release).
    `prev_spans` (B, N, 2): the previous x_0 estimate, only with `self_condition`
    (None = zeros, "no estimate yet").
    """
    spans = clamp_spans(spans)
    time_emb = timestep_embedding(t, self.dim)[:, None, :]           # (B, 1, D)
    out = self.noise_embed(spans) + (0.1 * time_emb).astype(self.dtype)
    if self.self_condition:
      prev = jnp.zeros_like(spans) if prev_spans is None else prev_spans
      out = out + self.self_cond_proj(
          span_sine_embedding(prev.astype(jnp.float32), self.dim // 2).astype(self.dtype))
    sine = span_sine_embedding(spans, self.dim // 2).astype(self.dtype)  # (B, N, D)
    query_pos = self.ref_point_head(sine)  # the same for every layer; used by layer 0 only
    hs = []
    for i, layer in enumerate(self.layers):
      # From the second layer on, the sine position is modulated by the current content
      # (the un-normalized output of the previous layer).
      q_sine = sine if i == 0 else sine * self.query_scale(out)
      out = layer(out, cache['layers'][i], cache['mask'], query_pos, q_sine, train)
      hs.append(self.norm(out))
    if self.num_layers == 1 and self.is_initializing():
      self.query_scale(out)  # the release defines it for any depth; keep it convertible
    return jnp.stack(hs)
