"""The model's 16-bit dropout: rate, unbiased scale, identity when deterministic."""
import jax
import jax.numpy as jnp
import numpy as np

from momentdiff_jax.model.layers import Dropout


def test_rate_and_scale():
  x = jnp.ones((16, 33, 1001))  # odd last dim: the packed bits are sliced
  for rate in (0.1, 0.5):
    y = np.asarray(Dropout(rate).apply({}, x, False, rngs={'dropout': jax.random.PRNGKey(0)}))
    assert abs((y == 0).mean() - rate) < 3e-3
    assert abs(y.mean() - 1.0) < 5e-3
    assert set(np.unique(y)) <= {0.0, np.float32(65536.0 / round((1 - rate) * 65536))}


def test_deterministic_and_keys():
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 7, 10))
  d = Dropout(0.3)
  np.testing.assert_array_equal(d.apply({}, x, True), x)
  a = d.apply({}, x, False, rngs={'dropout': jax.random.PRNGKey(2)})
  b = d.apply({}, x, False, rngs={'dropout': jax.random.PRNGKey(3)})
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, d.apply({}, x, False, rngs={'dropout': jax.random.PRNGKey(2)}))
