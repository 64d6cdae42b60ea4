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


def _conv(features, kernel, stride=(1, 1, 1), name=None):
  """Conv3d without bias, torch's symmetric `kernel // 2` padding."""
  return nn.Conv(features, tuple(kernel), strides=tuple(stride),
                 padding=[(k // 2, k // 2) for k in kernel], use_bias=False, name=name)


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
