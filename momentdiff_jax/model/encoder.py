"""Condition generator: text-to-video layers and the self-attention encoder.

Both stacks are post-norm with PReLU FFNs, as the release (`T2V_TransformerEncoderLayer`,
`TransformerEncoderLayer` with activation='prelu'). The global token is handled by the
caller: the T2V layers see only the video tokens (the release passes the global token
through them untouched), the encoder sees [global, video].
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from momentdiff_jax.model.layers import (Dropout, Linear, MultiheadAttention, PReLU, layer_norm,
                                         prelu_ffn, xavier_uniform)

Dtype = Any


class _AttentionFFNLayer(nn.Module):
  """Parameters shared by both encoder layer kinds: one attention, a PReLU FFN, two
  LayerNorms (names as in the release, so checkpoints map one to one)."""
  dim: int
  num_heads: int
  ffn_dim: int
  dropout: float
  dtype: Dtype = jnp.float32

  def setup(self):
    self.self_attn = MultiheadAttention(self.dim, self.num_heads, self.dropout, self.dtype)
    self.linear1 = Linear(self.ffn_dim, kernel_init=xavier_uniform, dtype=self.dtype)
    self.linear2 = Linear(self.dim, kernel_init=xavier_uniform, dtype=self.dtype)
    self.norm1 = layer_norm(self.dtype)
    self.norm2 = layer_norm(self.dtype)
    self.activation = PReLU(self.dtype)
    self.drop = Dropout(self.dropout)
    self.drop1 = Dropout(self.dropout)
    self.drop2 = Dropout(self.dropout)

  def ffn(self, x: jax.Array, det: bool) -> jax.Array:
    return prelu_ffn(x, self.linear1, self.activation, self.linear2, self.drop, det)


class T2VEncoderLayer(_AttentionFFNLayer):
  """Video tokens (queries, with position) attend to text tokens; FFN; LayerNorms.

  The release's order differs from a plain post-norm layer: the FFN reads
  norm1(x + attn) but its residual is added to the *un-normalized* x + attn, and only
  then norm2 is applied. That order is kept. The release also defines a second
  attention (`self_attn_new`) that it never calls; it has no counterpart here.
  """

  def __call__(self, video: jax.Array, video_pos: jax.Array, text: jax.Array,
               text_pos: jax.Array, text_mask: jax.Array, train: bool) -> jax.Array:
    """video, video_pos (B, Lv, D); text, text_pos (B, Lt, D); text_mask (B, Lt) -> (B, Lv, D).

    Padded video rows are computed like real ones (the release does the same); every
    consumer masks them as keys, so they never reach a real position.
    """
    det = not train
    a = self.self_attn(video + video_pos, text + text_pos, text, text_mask, train)
    x = video + self.drop1(a, deterministic=det)
    h = self.ffn(self.norm1(x), det)
    return self.norm2(x + self.drop2(h, deterministic=det))


class EncoderLayer(_AttentionFFNLayer):
  """Post-norm self-attention layer (q = k = x + pos, v = x) with a PReLU FFN."""

  def __call__(self, x: jax.Array, pos: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """x, pos (B, L, D); mask (B, L) -> (B, L, D)."""
    det = not train
    qk = x + pos
    x = self.norm1(x + self.drop1(self.self_attn(qk, qk, x, mask, train), deterministic=det))
    h = self.ffn(x, det)
    return self.norm2(x + self.drop2(h, deterministic=det))


class _LayerStack(nn.Module):
  """`num_layers` layers of `layer_cls`, applied in order as `x = layer(x, *args, train)`;
  the submodules are `layers_<i>` (release: `<stack>.layers.<i>`)."""
  num_layers: int
  dim: int
  num_heads: int
  ffn_dim: int
  dropout: float
  dtype: Dtype = jnp.float32
  layer_cls = None  # set by each stack

  def setup(self):
    self.layers = [self.layer_cls(self.dim, self.num_heads, self.ffn_dim, self.dropout,
                                  self.dtype) for _ in range(self.num_layers)]

  def __call__(self, x, *args, train: bool):
    for layer in self.layers:
      x = layer(x, *args, train)
    return x


class T2VEncoder(_LayerStack):
  """T2V layers (release: `transformer.t2v_encoder`); call as `(video, video_pos, text,
  text_pos, text_mask, train=...)`. The text stays unchanged across layers, as in the
  release."""
  layer_cls = T2VEncoderLayer


class Encoder(_LayerStack):
  """Encoder layers (release: `transformer.encoder`); call as `(x, pos, mask, train=...)`."""
  layer_cls = EncoderLayer
