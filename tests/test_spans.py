"""Span conversions, IoU and GIoU vs a plain numpy implementation."""
import jax
import jax.numpy as jnp
import numpy as np

from momentdiff_jax.ops import spans


def np_iou_giou(a, b):
  """Loop reference on se spans; empty union / enclosing -> 0 (documented choice)."""
  iou = np.zeros((len(a), len(b)))
  giou = np.zeros((len(a), len(b)))
  for i, (s1, e1) in enumerate(a):
    for j, (s2, e2) in enumerate(b):
      inter = max(0.0, min(e1, e2) - max(s1, s2))
      union = (e1 - s1) + (e2 - s2) - inter
      encl = max(e1, e2) - min(s1, s2)
      iou[i, j] = inter / union if union > 0 else 0.0
      giou[i, j] = iou[i, j] - ((encl - union) / encl if encl > 0 else 0.0)
  return iou, giou


def random_cw(rng, n, degenerate_frac=0.3):
  c = rng.uniform(0, 1, n)
  w = rng.uniform(0, 0.6, n)
  w[rng.uniform(size=n) < degenerate_frac] = 0.0   # zero-width spans
  return np.stack([c, w], -1).astype(np.float32)


def test_conversions_roundtrip():
  rng = np.random.default_rng(0)
  cw = random_cw(rng, 50)
  se = np.asarray(spans.cw_to_se(cw))
  np.testing.assert_allclose(se[:, 0], cw[:, 0] - cw[:, 1] / 2, atol=1e-7)
  np.testing.assert_allclose(se[:, 1], cw[:, 0] + cw[:, 1] / 2, atol=1e-7)
  np.testing.assert_allclose(np.asarray(spans.se_to_cw(se)), cw, atol=1e-6)


def test_iou_giou_vs_numpy():
  rng = np.random.default_rng(1)
  f = jax.jit(lambda a, b: (spans.pairwise_iou(a, b), spans.pairwise_giou(a, b)))
  for _ in range(5):
    a = np.array(spans.cw_to_se(random_cw(rng, 7)))
    b = np.array(spans.cw_to_se(random_cw(rng, 9)))
    # Identical and identical-degenerate pairs too.
    b[:3] = a[:3]
    b[3] = [0.4, 0.4]
    a[4] = [0.4, 0.4]
    iou, giou = f(a, b)
    ref_iou, ref_giou = np_iou_giou(a.astype(np.float64), b.astype(np.float64))
    assert np.all(np.isfinite(iou)) and np.all(np.isfinite(giou))
    np.testing.assert_allclose(iou, ref_iou, atol=1e-5)
    np.testing.assert_allclose(giou, ref_giou, atol=1e-5)
    assert np.all((giou >= -1 - 1e-6) & (giou <= 1 + 1e-6))


def test_batched_and_elementwise():
  rng = np.random.default_rng(2)
  a = spans.cw_to_se(random_cw(rng, 12).reshape(3, 4, 2))
  b = spans.cw_to_se(random_cw(rng, 12).reshape(3, 4, 2))
  g = spans.pairwise_giou(a, b)
  assert g.shape == (3, 4, 4)
  for k in range(3):
    np.testing.assert_allclose(g[k], np_iou_giou(np.asarray(a[k]), np.asarray(b[k]))[1],
                               atol=1e-5)
  np.testing.assert_allclose(spans.elementwise_giou(a, b),
                             jnp.diagonal(g, axis1=-2, axis2=-1), atol=1e-6)
  np.testing.assert_allclose(spans.elementwise_iou(a, b),
                             jnp.diagonal(spans.pairwise_iou(a, b), axis1=-2, axis2=-1),
                             atol=1e-6)


def test_degenerate_gradients_finite():
  a = jnp.array([[0.3, 0.0], [0.5, 0.2]])   # cw, first one zero width
  b = jnp.array([[0.3, 0.0], [0.1, 0.0]])

  def loss(a):
    return jnp.sum(1 - spans.pairwise_giou(spans.cw_to_se(a), spans.cw_to_se(b)))

  g = jax.grad(loss)(a)
  assert np.all(np.isfinite(g))
