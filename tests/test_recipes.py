"""Recipe switch, self-conditioning and the sampler's draws/fusion path."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from momentdiff_jax.common import recipes
from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.inference import sampling
from momentdiff_jax.model import MomentDiff
from momentdiff_jax.ops import diffusion

DV, DT, B, LV, LT = 10, 6, 2, 8, 5


def test_release_recipe_is_identity_and_plus_sets_keys():
  c = base_config()
  assert recipes.apply_recipe(c) is c
  c.recipe = 'plus'
  p = recipes.apply_recipe(c)
  for key, value in recipes.recipe_settings('plus').items():
    node = p
    for part in key.split('.'):
      node = node[part]
    assert node == value, key
  assert c.to_dict() == base_config().to_dict() | {'recipe': 'plus'}   # input unmodified


def test_explicit_value_wins_and_unknown_recipe_is_named():
  c = base_config()
  c.recipe, c.ema_decay = 'ema+draws', 0.9
  out = recipes.apply_recipe(c)
  assert out.ema_decay == 0.9 and out.diffusion.eval_num_spans == 25
  c.recipe = 'ema+nonsense'
  with pytest.raises(ValueError, match='nonsense'):
    recipes.apply_recipe(c)


def _model(self_condition):
  c = base_config().model
  c.hidden_dim, c.num_heads, c.ffn_dim, c.self_condition = 16, 2, 32, self_condition
  return MomentDiff(c, DV, DT)


@pytest.fixture(scope='module')
def pair():
  r = np.random.RandomState(0)
  inp = (r.randn(B, LV, DV).astype(np.float32), np.ones((B, LV), np.float32),
         r.randn(B, LT, DT).astype(np.float32), np.ones((B, LT), np.float32))
  spans, t = np.full((B, 3, 2), 0.5, np.float32), np.zeros((B,), np.int32)
  plain, sc = _model(False), _model(True)
  v_sc = sc.init(jax.random.PRNGKey(0), *inp, spans, t)
  v_plain = plain.init(jax.random.PRNGKey(0), *inp, spans, t)
  return plain, sc, v_plain, v_sc, inp


def test_self_condition_adds_only_a_zero_initialized_projection(pair):
  plain, sc, v_plain, v_sc, inp = pair
  extra = v_sc['params']['diffusion_decoder'].pop('self_cond_proj')
  assert all(not np.any(x) for x in jax.tree.leaves(extra))
  assert jax.tree.structure(v_sc) == jax.tree.structure(v_plain)
  v_sc['params']['diffusion_decoder']['self_cond_proj'] = extra
  # Same release parameters + zero projection: outputs equal whatever the estimate.
  v_same = jax.tree.map(lambda x: x, v_plain)
  v_same['params']['diffusion_decoder']['self_cond_proj'] = extra
  cond = plain.apply(v_plain, *inp, method=MomentDiff.encode)
  cache = plain.apply(v_plain, cond, method=MomentDiff.prepare)
  spans = np.random.RandomState(1).rand(B, 4, 2).astype(np.float32)
  t = np.array([3, 900], np.int32)
  a = plain.apply(v_plain, cache, spans, t, method=MomentDiff.denoise)
  prev = np.random.RandomState(2).rand(B, 4, 2).astype(np.float32)
  b = sc.apply(v_same, cache, spans, t, prev_spans=prev, method=MomentDiff.denoise)
  assert b['pred_spans'].shape == (2, B, 4, 2) and b['pred_logits'].shape == (2, B, 4, 2)
  np.testing.assert_allclose(b['pred_spans'], a['pred_spans'], rtol=1e-6, atol=1e-6)
  # A non-zero projection makes the estimate matter.
  v_same['params']['diffusion_decoder']['self_cond_proj'] = jax.tree.map(
      lambda x: x + 0.1, extra)
  c = sc.apply(v_same, cache, spans, t, prev_spans=prev, method=MomentDiff.denoise)
  assert not np.allclose(c['pred_spans'], a['pred_spans'])


def test_sampler_with_self_condition_draws_and_fusion(pair):
  _, sc, _, v_sc, inp = pair
  config = base_config()
  config.model = sc.config
  config.diffusion.eval_num_spans = 12
  config.diffusion.fusion = 'wbf'
  config.max_pred_windows = 4
  sample = jax.jit(functools.partial(sampling.sample_one, sc, config,
                                     diffusion.make_schedule(config.diffusion), 3))
  out = sample(v_sc, *inp, jax.random.PRNGKey(3))
  assert out['spans'].shape == (B, 5, 2) and out['scores'].shape == (B, 5)
  assert np.all(np.diff(np.asarray(out['scores']), axis=1) <= 1e-7)   # best first
  config.diffusion.fusion = 'bogus'
  with pytest.raises(ValueError, match='bogus'):
    sampling.sample_one(sc, config, diffusion.make_schedule(config.diffusion), 3,
                        v_sc, *inp, jax.random.PRNGKey(3))


def test_self_condition_sampler_passes_previous_estimate():
  """ddim_sample hands step k's x_0 estimate to step k + 1 (zeros at the first step):
  a denoiser returning prev + 0.1 ends at 0.1 x steps."""

  def denoise(spans, t, prev):
    return jnp.zeros(spans.shape), prev + 0.1

  sched = diffusion.make_schedule(base_config().diffusion)
  spans, _ = jax.jit(lambda r: diffusion.ddim_sample(
      denoise, r, (1, 2, 2), sched, 3, 1.0, 2.0, self_condition=True))(jax.random.PRNGKey(0))
  np.testing.assert_allclose(spans, 0.3, rtol=1e-6)
