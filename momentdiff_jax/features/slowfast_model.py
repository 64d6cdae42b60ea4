"""SlowFast ResNet (Feichtenhofer et al. 2019) as a Flax module, channels-last.

Two pathways over the same clip: Slow (few frames, wide) and Fast (alpha x more frames,
1/beta the channels). After the stem and after each of the first three stages, a
time-strided convolution of the Fast features is concatenated to the Slow ones
(fast-to-slow lateral fusion). Each stage is a stack of bottleneck blocks (1x1x1 or
3x1x1 -> 1x3x3 with the stage's spatial stride -> 1x1x1, BatchNorm and ReLU, projection
shortcut where the shape changes). The clip feature is each pathway's last map averaged
over time and space, Slow then Fast, concatenated (2048 + 256 = 2304 for R50).

Every width, depth and kernel size is a field of `SlowFastConfig`, which `slowfast.py`
reads off the checkpoint's tensor shapes. Module names follow the SlowFast repository's
(`s1.pathway0_stem` -> `stem0`, `s2_fuse` -> `fuse1`, `s2.pathway0_res0` ->
`res1_0/block0`, `branch2.a_bn` -> `a_bn`).
"""
import dataclasses
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_EPS = 1e-5  # torch.nn.BatchNorm3d default, used by both SlowFast code bases


@dataclasses.dataclass(frozen=True)
class StageConfig:
  depth: int
  inner: int                 # bottleneck width (conv_a / conv_b output channels)
  out: int                   # conv_c output channels
  a_kernel: Tuple[int, int, int]
  b_kernel: Tuple[int, int, int]
  spatial_stride: int


@dataclasses.dataclass(frozen=True)
class SlowFastConfig:
  stem_out: Tuple[int, int]                        # (slow, fast)
  stem_kernel: Tuple[Tuple[int, int, int], ...]   # per pathway, (t, h, w)
  stages: Tuple[Tuple[StageConfig, ...], ...]     # [pathway][stage]
  fuse_out: Tuple[int, ...]                        # channels added to Slow after stem, s1..
  fuse_kernel_t: int                               # 7 for R50 8x8
  alpha: int = 4                                   # Fast frames / Slow frames (fusion stride)
  in_channels: int = 3

  @property
  def feature_dim(self) -> int:
    return self.stages[0][-1].out + self.stages[1][-1].out


class Conv3d(nn.Module):
  """Conv3d without bias, torch's symmetric `kernel // 2` padding; kernel (t, h, w, I, O).

  Computed with 2-D convolutions, the same sums in another order: XLA:CPU runs 3-D
  convolutions several times slower than 2-D ones (a 5x7x7 stem 12x slower), and GPUs
  and TPUs handle both. A (t, 1, 1) kernel is a 2-D (t, 1) convolution over
  (T, H*W); otherwise the t temporal taps are stacked on the channel axis and each
  output frame is one 2-D (h, w) convolution over t*I channels.
  """
  features: int
  kernel_size: Tuple[int, int, int]
  strides: Tuple[int, int, int] = (1, 1, 1)

  @nn.compact
  def __call__(self, x):
    kt, kh, kw = self.kernel_size
    st, sh, sw = self.strides
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kt, kh, kw, x.shape[-1], self.features))
    n, t, h, w, c = x.shape
    dims = ('NHWC', 'HWIO', 'NHWC')
    if kh == kw == 1 and sh == sw == 1:
      y = jax.lax.conv_general_dilated(x.reshape(n, t, h * w, c), kernel[:, 0], (st, 1),
                                       [(kt // 2, kt // 2), (0, 0)], dimension_numbers=dims)
      return y.reshape(n, y.shape[1], h, w, self.features)
    t_out = (t + 2 * (kt // 2) - kt) // st + 1
    xp = jnp.pad(x, ((0, 0), (kt // 2, kt // 2), (0, 0), (0, 0), (0, 0)))
    taps = [xp[:, i:i + st * (t_out - 1) + 1:st] for i in range(kt)]  # (n, t_out, h, w, c)
    stacked = jnp.concatenate(taps, axis=-1).reshape(n * t_out, h, w, kt * c)
    k2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * c, self.features)
    y = jax.lax.conv_general_dilated(stacked, k2d, (sh, sw),
                                     [(kh // 2, kh // 2), (kw // 2, kw // 2)],
                                     dimension_numbers=dims)
    return y.reshape(n, t_out, *y.shape[1:])


def _conv(features, kernel, stride=(1, 1, 1), name=None):
  return Conv3d(features, tuple(kernel), tuple(stride), name=name)


def _bn(name):
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=name)


class Stem(nn.Module):
  """conv (t,7,7)/(1,2,2) -> BN -> ReLU -> max pool (1,3,3)/(1,2,2) pad (0,1,1)."""
  features: int
  kernel: Tuple[int, int, int]

  @nn.compact
  def __call__(self, x):
    x = nn.relu(_bn('bn')(_conv(self.features, self.kernel, (1, 2, 2), name='conv')(x)))
    # torch pads max pooling with -inf, as flax does
    return nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))


class Fuse(nn.Module):
  """Fast (N, T, H, W, C) -> (N, T/alpha, H, W, features): conv (k,1,1)/(alpha,1,1)."""
  features: int
  kernel_t: int
  alpha: int

  @nn.compact
  def __call__(self, fast):
    y = _conv(self.features, (self.kernel_t, 1, 1), (self.alpha, 1, 1), name='conv')(fast)
    return nn.relu(_bn('bn')(y))


class Bottleneck(nn.Module):
  cfg: StageConfig
  stride: int
  shortcut: bool  # projection shortcut (channels or resolution change)

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    s = (1, self.stride, self.stride)
    y = nn.relu(_bn('a_bn')(_conv(cfg.inner, cfg.a_kernel, name='a')(x)))
    y = nn.relu(_bn('b_bn')(_conv(cfg.inner, cfg.b_kernel, s, name='b')(y)))
    y = _bn('c_bn')(_conv(cfg.out, (1, 1, 1), name='c')(y))
    if self.shortcut:
      x = _bn('branch1_bn')(_conv(cfg.out, (1, 1, 1), s, name='branch1')(x))
    return nn.relu(x + y)


class Stage(nn.Module):
  """`depth` bottlenecks; the first one carries the stride (and the shortcut conv)."""
  cfg: StageConfig

  @nn.compact
  def __call__(self, x):
    for j in range(self.cfg.depth):
      stride = self.cfg.spatial_stride if j == 0 else 1
      shortcut = j == 0 and (x.shape[-1] != self.cfg.out or stride != 1)
      x = Bottleneck(self.cfg, stride, shortcut, name=f'block{j}')(x)
    return x


class SlowFast(nn.Module):
  """slow (N, T/alpha, H, W, 3), fast (N, T, H, W, 3) -> (N, slow_out + fast_out)."""
  cfg: SlowFastConfig

  @nn.compact
  def __call__(self, slow, fast):
    cfg = self.cfg
    x = [Stem(cfg.stem_out[p], cfg.stem_kernel[p], name=f'stem{p}')(v)
         for p, v in enumerate((slow, fast))]
    for s in range(len(cfg.stages[0]) + 1):
      if s > 0:  # stage s of both pathways, then the lateral fusion that follows it
        x = [Stage(cfg.stages[p][s - 1], name=f'res{s}_{p}')(x[p]) for p in range(2)]
      if s < len(cfg.fuse_out):
        lateral = Fuse(cfg.fuse_out[s], cfg.fuse_kernel_t, cfg.alpha, name=f'fuse{s}')(x[1])
        x[0] = jnp.concatenate([x[0], lateral], axis=-1)
    return jnp.concatenate([v.mean(axis=(1, 2, 3)) for v in x], axis=-1)


def r50_config(alpha: int = 4) -> SlowFastConfig:
  """SlowFast R50 8x8 as published (what `load_slowfast` infers from those weights)."""
  depths, slow_out = (3, 4, 6, 3), (256, 512, 1024, 2048)
  slow_t = (1, 1, 3, 3)  # temporal kernel of conv_a: Slow res2/res3 1, res4/res5 3
  stages = tuple(
      tuple(StageConfig(depth=d, inner=out // 4 // beta, out=out // beta,
                        a_kernel=(kt if beta == 1 else 3, 1, 1), b_kernel=(1, 3, 3),
                        spatial_stride=1 if i == 0 else 2)
            for i, (d, out, kt) in enumerate(zip(depths, slow_out, slow_t)))
      for beta in (1, 8))
  return SlowFastConfig(stem_out=(64, 8), stem_kernel=((1, 7, 7), (5, 7, 7)), stages=stages,
                        fuse_out=(16, 64, 128, 256), fuse_kernel_t=7, alpha=alpha)
