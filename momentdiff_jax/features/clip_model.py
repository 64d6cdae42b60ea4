"""CLIP's image and text towers (Radford et al. 2021) as Flax modules.

Pre-LayerNorm transformer blocks; the text tower is causal and ends with a final
LayerNorm applied to every token; the image tower is a ViT whose class token, after
`post_layernorm`, goes through a bias-free `visual_projection`. Sizes come from a
`TowerConfig` read off the checkpoint's config.json (see `clip.py`), so every CLIP
variant is the same code. Module names follow Hugging Face's `CLIPModel` so the weight
mapping in `clip.py` is a renaming plus transposes.
"""
import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


# Hugging Face `hidden_act` names -> functions (exact erf GELU for 'gelu').
ACTIVATIONS = {
    'quick_gelu': quick_gelu,
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'relu': jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  width: int              # hidden_size
  layers: int             # num_hidden_layers
  heads: int              # num_attention_heads
  mlp_dim: int            # intermediate_size
  act: str = 'quick_gelu'
  eps: float = 1e-5       # layer_norm_eps
  # text tower
  vocab_size: int = 0
  context_length: int = 0  # max_position_embeddings
  # image tower
  image_size: int = 0
  patch_size: int = 0
  channels: int = 3


class Attention(nn.Module):
  """Multi-head self-attention with q/k/v/out biases; mask (B, 1|H, L, L) bool."""
  width: int
  heads: int

  @nn.compact
  def __call__(self, x, mask: Optional[jax.Array] = None):
    b, l, _ = x.shape
    head_dim = self.width // self.heads

    def split(name):
      return nn.Dense(self.width, name=name)(x).reshape(b, l, self.heads, head_dim)

    q, k, v = split('q_proj'), split('k_proj'), split('v_proj')
    logits = jnp.einsum('bqhd,bkhd->bhqk', q * head_dim ** -0.5, k)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, l, self.width)
    return nn.Dense(self.width, name='out_proj')(out)


class EncoderLayer(nn.Module):
  cfg: TowerConfig

  @nn.compact
  def __call__(self, x, mask=None):
    cfg = self.cfg
    h = nn.LayerNorm(cfg.eps, name='layer_norm1')(x)
    x = x + Attention(cfg.width, cfg.heads, name='self_attn')(h, mask)
    h = nn.LayerNorm(cfg.eps, name='layer_norm2')(x)
    h = nn.Dense(cfg.mlp_dim, name='fc1')(h)
    h = nn.Dense(cfg.width, name='fc2')(ACTIVATIONS[cfg.act](h))
    return x + h


class Encoder(nn.Module):
  cfg: TowerConfig

  @nn.compact
  def __call__(self, x, mask=None):
    for i in range(self.cfg.layers):
      x = EncoderLayer(self.cfg, name=f'layers_{i}')(x, mask)
    return x


class TextTower(nn.Module):
  """ids, mask (B, L) int -> last_hidden_state (B, L, width), final LayerNorm applied.

  Attention is causal and ignores padded keys (mask 0), as Hugging Face's CLIPTextModel;
  with padding after the end token the valid tokens are unaffected by the padding.
  """
  cfg: TowerConfig

  @nn.compact
  def __call__(self, ids, mask):
    cfg = self.cfg
    length = ids.shape[1]
    tok = nn.Embed(cfg.vocab_size, cfg.width, name='token_embedding')(ids)
    pos = self.param('position_embedding', nn.initializers.normal(0.01),
                     (cfg.context_length, cfg.width))
    x = tok + pos[:length]
    causal = jnp.tril(jnp.ones((length, length), bool))
    attn_mask = causal[None, None] & (mask[:, None, None, :] > 0)
    x = Encoder(cfg, name='encoder')(x, attn_mask)
    return nn.LayerNorm(cfg.eps, name='final_layer_norm')(x)


class ImageTower(nn.Module):
  """pixels (N, S, S, C) -> image embeds (N, projection_dim), not L2-normalized."""
  cfg: TowerConfig
  projection_dim: int

  @nn.compact
  def __call__(self, pixels):
    cfg = self.cfg
    p = cfg.patch_size
    x = nn.Conv(cfg.width, (p, p), strides=(p, p), padding='VALID', use_bias=False,
                name='patch_embedding')(pixels)
    n = x.shape[0]
    x = x.reshape(n, -1, cfg.width)
    cls = self.param('class_embedding', nn.initializers.normal(0.02), (cfg.width,))
    pos = self.param('position_embedding', nn.initializers.normal(0.01),
                     ((cfg.image_size // p) ** 2 + 1, cfg.width))
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, cfg.width)), x], axis=1) + pos
    x = nn.LayerNorm(cfg.eps, name='pre_layrnorm')(x)
    x = Encoder(cfg, name='encoder')(x)
    pooled = nn.LayerNorm(cfg.eps, name='post_layernorm')(x[:, 0])
    return nn.Dense(self.projection_dim, use_bias=False, name='visual_projection')(pooled)
