"""Building blocks shared by the encoder and the denoiser.

Parameter names follow the release's PyTorch modules (`kernel` = torch `weight`
transposed, `scale` = LayerNorm `weight`), so `momentdiff_jax.release.torch_mapping` can map a
release checkpoint by rule. Initializers mirror torch's defaults where the release
relies on them (Linear biases U(+-1/sqrt(fan_in)), xavier-uniform kernels inside the
transformer, PReLU slope 0.25), so training from scratch starts where the release does.
"""
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]

# torch.nn.Linear's default kernel init (kaiming_uniform with a=sqrt(5)) is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
# The release re-initializes every >1-d tensor of its transformer with xavier_uniform.
xavier_uniform = nn.initializers.xavier_uniform()
LN_EPS = 1e-5  # torch.nn.LayerNorm's default (flax defaults to 1e-6)


def _torch_bias_init(fan_in: int) -> Initializer:
  bound = 1.0 / (fan_in ** 0.5) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class Linear(nn.Module):
  """Dense layer `x @ kernel + bias`; kernel (in, out) is torch's weight transposed.

  bias_init: 'torch' (U(+-1/sqrt(fan_in)), torch.nn.Linear's default) or 'zeros'
  (what torch's attention modules use for their projection biases).
  """
  features: int
  kernel_init: Initializer = torch_default_kernel
  bias_init: str = 'torch'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (fan_in, self.features), jnp.float32)
    b_init = (_torch_bias_init(fan_in) if self.bias_init == 'torch'
              else nn.initializers.zeros_init())
    bias = self.param('bias', b_init, (self.features,), jnp.float32)
    x = x.astype(self.dtype)
    y = jnp.dot(x, kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


def layer_norm(dtype: Dtype, name: Optional[str] = None) -> nn.LayerNorm:
  # flax's LayerNorm computes its statistics in float32 even for bf16 inputs.
  return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, param_dtype=jnp.float32, name=name)


class PReLU(nn.Module):
  """PReLU with one learned slope (torch.nn.PReLU() with num_parameters=1)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    slope = self.param('negative_slope', nn.initializers.constant(0.25), (), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(self.dtype) * x)


class MLP(nn.Module):
  """`num_layers` Linear layers with ReLU between (the release's `MLP`).

  Submodules are `layers_0 .. layers_{n-1}` like torch's `layers.0 ..`.
  """
  hidden_dim: int
  output_dim: int
  num_layers: int
  kernel_init: Initializer = xavier_uniform
  dtype: Dtype = jnp.float32

  def setup(self):
    dims = [self.hidden_dim] * (self.num_layers - 1) + [self.output_dim]
    self.layers = [Linear(d, kernel_init=self.kernel_init, dtype=self.dtype) for d in dims]

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < self.num_layers - 1:
        x = nn.relu(x)
    return x


class Dropout(nn.Module):
  """Inverted dropout (drop with probability `rate`, scale the rest) like nn.Dropout,
  drawing 16 random bits per element: two per threefry word instead of one.

  flax's nn.Dropout draws a 32-bit uniform per element; on CPU that threefry work was
  ~40% of a Charades training step (the 2818-d input dropout alone is 2.9M draws per
  batch of 32). The keep probability is exact to 2^-16 and the scale uses it.
  The bits keep x's leading dims, so a batch-sharded x gets batch-sharded bits.
  """
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    threshold = min(max(int(round((1.0 - self.rate) * 65536)), 1), 65535)
    last = x.shape[-1] if x.ndim else 1
    words = jax.random.bits(self.make_rng('dropout'), x.shape[:-1] + ((last + 1) // 2,),
                            jnp.uint32)
    bits = jax.lax.bitcast_convert_type(words, jnp.uint16)          # (..., last/2, 2)
    bits = bits.reshape(x.shape[:-1] + (-1,))[..., :last].reshape(x.shape)
    scale = jnp.asarray(65536.0 / threshold, x.dtype)
    return jnp.where(bits < jnp.uint16(threshold), x * scale, jnp.zeros((), x.dtype))


class InputProjection(nn.Module):
  """One block of an input projection: LayerNorm -> Dropout -> Linear (-> ReLU).

  The Linear is named `net_1` because the release's block keeps it at index 1 of an
  `nn.Sequential(Dropout, Linear)` named `net`.
  """
  features: int
  dropout: float
  relu: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layer_norm(self.dtype, name='LayerNorm')(x)
    x = Dropout(self.dropout)(x, deterministic=not train)
    x = Linear(self.features, dtype=self.dtype, name='net_1')(x)
    return nn.relu(x) if self.relu else x


def prelu_ffn(x: jax.Array, linear1: Linear, activation: PReLU, linear2: Linear,
              drop: 'Dropout', det: bool) -> jax.Array:
  """The release's FFN body, linear2(drop(prelu(linear1(x)))); residual and norm are
  the caller's, since the layers place them differently."""
  return linear2(drop(activation(linear1(x)), deterministic=det))


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: Optional[jax.Array],
              dropout: 'Dropout', train: bool) -> jax.Array:
  """Multi-head scaled dot-product attention on already projected, head-split inputs.

  Args:
    q: (B, Lq, H, dk) queries; k: (B, Lk, H, dk) keys; v: (B, Lk, H, dv) values,
      dv may differ from dk (the denoiser's keys are twice as wide as its values).
    key_mask: (B, Lk), nonzero for real keys; None attends everywhere.
    dropout: applied to the attention weights (torch's MultiheadAttention `dropout`).
  Returns:
    (B, Lq, H * dv), heads concatenated in order.
  """
  dtype = q.dtype
  q = q * jnp.asarray(q.shape[-1] ** -0.5, dtype)
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
  if key_mask is not None:
    # A finite floor instead of -inf: a fully masked row gives a uniform average
    # rather than NaN (the release replaces those NaN by 0 after the fact).
    big_neg = jnp.finfo(jnp.float32).min
    logits = jnp.where(key_mask[:, None, None, :] > 0, logits, big_neg)
  weights = jax.nn.softmax(logits, axis=-1)
  weights = dropout(weights, deterministic=not train).astype(dtype)
  out = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
  return out.reshape(out.shape[:2] + (-1,))


class MultiheadAttention(nn.Module):
  """torch.nn.MultiheadAttention (batch-first here): q/k/v in-projections, out_proj.

  torch stores the three in-projections as one `in_proj_weight` (3D, D); here they are
  `q_proj`, `k_proj`, `v_proj` (the converter splits the rows). Biases start at zero
  and kernels xavier-uniform over the stacked (3D, D) matrix, as in the release.
  """
  dim: int
  num_heads: int
  dropout: float
  dtype: Dtype = jnp.float32

  def setup(self):
    # xavier over the stacked (3D, D) in_proj_weight: bound sqrt(6 / 4D) == variance
    # scaling 0.5 over fan_avg of one (D, D) slice.
    in_init = nn.initializers.variance_scaling(0.5, 'fan_avg', 'uniform')
    self.q_proj = Linear(self.dim, kernel_init=in_init, bias_init='zeros', dtype=self.dtype)
    self.k_proj = Linear(self.dim, kernel_init=in_init, bias_init='zeros', dtype=self.dtype)
    self.v_proj = Linear(self.dim, kernel_init=in_init, bias_init='zeros', dtype=self.dtype)
    self.out_proj = Linear(self.dim, kernel_init=xavier_uniform, bias_init='zeros',
                           dtype=self.dtype)
    self.attn_drop = Dropout(self.dropout)

  def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array,
               key_mask: Optional[jax.Array], train: bool) -> jax.Array:
    """query (B, Lq, D), key/value (B, Lk, D), key_mask (B, Lk) -> (B, Lq, D)."""
    h = self.num_heads
    split = lambda x: x.reshape(x.shape[:2] + (h, -1))
    out = attention(split(self.q_proj(query)), split(self.k_proj(key)),
                    split(self.v_proj(value)), key_mask, self.attn_drop, train)
    return self.out_proj(out)
