"""1D temporal spans: format conversion, IoU and generalized IoU (pure jnp).

Two formats are used throughout the package:
  * cw: (center, width), normalized to [0, 1] of the video (what the model predicts);
  * se: (start, end), same normalization (what IoU is defined on).

All functions broadcast over leading batch dimensions. Degenerate spans (zero width)
never produce NaN: where a union (or enclosing span) is empty the ratio is taken as 0,
and the divisions are written so that their gradients are finite as well.
"""
import jax.numpy as jnp


def cw_to_se(spans):
  """(center, width) -> (start, end). `(..., 2) -> (..., 2)`."""
  c, w = spans[..., 0], spans[..., 1]
  return jnp.stack([c - 0.5 * w, c + 0.5 * w], axis=-1)


def se_to_cw(spans):
  """(start, end) -> (center, width). `(..., 2) -> (..., 2)`."""
  s, e = spans[..., 0], spans[..., 1]
  return jnp.stack([0.5 * (s + e), e - s], axis=-1)


def _safe_div(num, den):
  # Double `where` so that the unused branch never divides by zero; a single where
  # would still make the gradient NaN (0 * inf) for degenerate spans.
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _pairwise_parts(a, b):
  """Intersection, union and enclosing length for every pair. a `(..., N, 2)` se,
  b `(..., M, 2)` se -> three arrays `(..., N, M)`."""
  s1, e1 = a[..., :, None, 0], a[..., :, None, 1]
  s2, e2 = b[..., None, :, 0], b[..., None, :, 1]
  inter = jnp.maximum(jnp.minimum(e1, e2) - jnp.maximum(s1, s2), 0.0)
  union = (e1 - s1) + (e2 - s2) - inter
  enclosing = jnp.maximum(jnp.maximum(e1, e2) - jnp.minimum(s1, s2), 0.0)
  return inter, union, enclosing


def pairwise_iou(a, b):
  """IoU of every pair of spans. a `(..., N, 2)` se, b `(..., M, 2)` se -> `(..., N, M)`.

  An empty union (two zero-width spans) gives IoU 0.
  """
  inter, union, _ = _pairwise_parts(a, b)
  return _safe_div(inter, union)


def pairwise_giou(a, b):
  """Generalized IoU (Rezatofighi et al.) of every pair, in [-1, 1].

  a `(..., N, 2)` se, b `(..., M, 2)` se -> `(..., N, M)`. Same formula as the
  release's `generalized_temporal_iou`: iou - (enclosing - union) / enclosing; an
  empty enclosing span (two identical points) gives GIoU 0 instead of NaN.
  """
  inter, union, enclosing = _pairwise_parts(a, b)
  iou = _safe_div(inter, union)
  return iou - _safe_div(enclosing - union, enclosing)


def elementwise_giou(a, b):
  """GIoU of matched pairs (the diagonal of `pairwise_giou`). `(..., 2)` se each ->
  `(...)`."""
  return pairwise_giou(a[..., None, :], b[..., None, :])[..., 0, 0]


def elementwise_iou(a, b):
  """IoU of matched pairs. `(..., 2)` se each -> `(...)`."""
  return pairwise_iou(a[..., None, :], b[..., None, :])[..., 0, 0]
