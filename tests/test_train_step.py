"""The compiled units: the train step overfits one batch; the sampler's structure
(one replica's bodies, `replica_step` and `sample_one`, which the run vmaps)."""
import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.inference import sampling
from momentdiff_jax.ops import diffusion
from momentdiff_jax.run import train_step as ts
from momentdiff_jax.run import workdir

LV, LT, DV, DT, N = 23, 7, 37, 11, 3


def small_config():
  c = base_config()
  c.model.hidden_dim = 32
  c.model.num_heads = 4
  c.model.ffn_dim = 64
  c.model.dropout = 0.0
  c.model.input_dropout = 0.0
  c.diffusion.num_spans = N
  c.data.length_buckets = (LV,)
  c.data.max_q_l = LT
  c.data.max_windows = 2
  # Overfitting one batch fast: a large step, then x0.1 for the last 100 steps to settle.
  c.learning_rate = 3e-3
  c.lr_drop_epochs = 300
  c.grad_clip_norm = 1.0
  c.diffusion.eta = 0.0
  c.num_train_steps = 400
  return c


def fixed_batch(b=4, seed=0):
  rng = np.random.default_rng(seed)
  nclips = rng.integers(12, LV + 1, b)
  video_mask = (np.arange(LV)[None] < nclips[:, None]).astype(np.float32)
  query_mask = (np.arange(LT)[None] < rng.integers(3, LT + 1, b)[:, None]).astype(np.float32)
  span = np.stack([rng.uniform(0.3, 0.7, b), rng.uniform(0.15, 0.4, b)], 1)
  labels = np.zeros((b, LV), np.float32)
  pos = np.zeros((b, 2), np.int32)
  neg = np.zeros((b, 2), np.int32)
  for i in range(b):
    st = int((span[i, 0] - span[i, 1] / 2) * nclips[i])
    ed = int((span[i, 0] + span[i, 1] / 2) * nclips[i])
    labels[i, st:ed + 1] = 1
    pos[i] = [st, ed - 1]
    neg[i] = [0, nclips[i] - 1]
  return {
      'video_feat': rng.normal(size=(b, LV, DV)).astype(np.float32) * video_mask[..., None],
      'video_mask': video_mask,
      'query_feat': rng.normal(size=(b, LT, DT)).astype(np.float32) * query_mask[..., None],
      'query_mask': query_mask,
      'span_targets': np.stack([span, np.zeros_like(span)], 1).astype(np.float32),
      'span_mask': np.array([[1, 0]] * b, np.float32),
      'saliency_labels': labels * video_mask,
      'saliency_pos_idx': pos,
      'saliency_neg_idx': neg,
      'example_mask': np.ones((b,), np.float32),
  }


@pytest.fixture(scope='module')
def setup():
  config = small_config()
  model = workdir.create_model(config, DV, DT)
  schedule = diffusion.make_schedule(config.diffusion)
  params = workdir.init_params(model, config, jax.random.PRNGKey(0), DV, DT)
  return config, model, schedule, params


def test_overfits_one_batch(setup):
  config, model, schedule, params = setup
  batch = {k: jnp.asarray(v) for k, v in fixed_batch().items()}
  tx = ts.make_optimizer(config, steps_per_epoch=1)
  params = jax.tree.map(jnp.copy, params)   # the module fixture's params stay undonated
  state = ts.TrainState(step=jnp.asarray(0), params=params, opt_state=tx.init(params))
  step = jax.jit(lambda s, b, r: ts.replica_step(model, config, schedule, 1, s, b, r, {}),
                 donate_argnums=(0,))
  rng = jax.random.PRNGKey(1)
  span_losses = []
  for _ in range(config.num_train_steps):
    state, parts = step(state, batch, rng)
    span_losses.append(parts['vmr/loss_span'] + parts['vmr/loss_giou'])
  span_losses = np.asarray(jax.device_get(span_losses))
  assert np.isfinite(span_losses).all()
  # Within 300 steps, the span losses (L1 + GIoU) fall by >= 5x.
  first, at300 = span_losses[:10].mean(), span_losses[290:300].mean()
  assert first / at300 >= 5.0, (first, at300)

  sample = jax.jit(functools.partial(sampling.sample_one, model, config, schedule, 10))
  out = sample(state.params, batch['video_feat'], batch['video_mask'], batch['query_feat'],
               batch['query_mask'], jax.random.PRNGKey(2))
  top = np.asarray(out['spans'])[np.arange(4), np.asarray(out['scores']).argmax(1)]
  gt = np.asarray(batch['span_targets'][:, 0])
  se = lambda x: np.stack([x[:, 0] - x[:, 1] / 2, x[:, 0] + x[:, 1] / 2], 1)
  p, g = se(top), se(gt)
  inter = np.clip(np.minimum(p[:, 1], g[:, 1]) - np.maximum(p[:, 0], g[:, 0]), 0, None)
  iou = inter / (np.maximum(p[:, 1], g[:, 1]) - np.minimum(p[:, 0], g[:, 0]))
  assert (iou >= 0.9).all(), iou


def _dot_outputs(jaxpr):
  """Shapes of dot_general outputs, top level and inside the scan body separately."""
  top, in_scan = [], []

  def walk(jp, inside):
    for eqn in jp.eqns:
      if eqn.primitive.name == 'dot_general':
        (in_scan if inside else top).append(tuple(eqn.outvars[0].aval.shape))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub, inside or eqn.primitive.name == 'scan')

  walk(jaxpr.jaxpr, False)
  return top, in_scan


def test_sampler_computes_condition_once(setup):
  """The encoder (input projection of Dv features) runs once per sampling call, and
  the scan body holds no clip-length projection: only the N_r query rows and the
  attention over the precomputed keys."""
  config, model, schedule, params = setup
  b = fixed_batch(2)
  sample = functools.partial(sampling.sample_one, model, config, schedule, 5)
  jaxpr = jax.make_jaxpr(sample)(params, b['video_feat'], b['video_mask'], b['query_feat'],
                                 b['query_mask'], jax.random.PRNGKey(0))
  top, in_scan = _dot_outputs(jaxpr)
  n_scans = sum(e.primitive.name == 'scan' for e in jaxpr.jaxpr.eqns)
  assert n_scans == 1
  # Video input projection: (B, Lv, Dv) x (Dv, D): once in the program, never in the loop.
  vid_proj = [s for s in top + in_scan if s == (2, LV, config.model.hidden_dim)]
  assert vid_proj and not [s for s in in_scan if s[:2] == (2, LV)], in_scan
  assert any(s[:2] == (2, N) for s in in_scan)
  # Exactly one encoder pass: text rows (B, Lt, D) are projected by the input stack and
  # by each T2V layer's key and value projections, once each.
  txt = [s for s in top if s == (2, LT, config.model.hidden_dim)]
  assert len(txt) == config.model.n_input_proj + 2 * config.model.t2v_layers, top
  assert not [s for s in in_scan if LT in s[:2]]


def test_one_step_sampler_is_one_denoiser_call(setup):
  config, model, schedule, params = setup
  from momentdiff_jax.model import MomentDiff
  b = {k: jnp.asarray(v) for k, v in fixed_batch(2).items()}
  rng = jax.random.PRNGKey(3)
  out = sampling.sample_one(model, config, schedule, 1, params, b['video_feat'],
                            b['video_mask'], b['query_feat'], b['query_mask'], rng)
  init_rng, _ = jax.random.split(rng)
  x = jax.random.normal(init_rng, (2, N, 2))
  cond = model.apply(params, b['video_feat'], b['video_mask'], b['query_feat'], b['query_mask'],
                     method=MomentDiff.encode)
  cache = model.apply(params, cond, method=MomentDiff.prepare)
  ref = model.apply(params, cache, diffusion.signal_to_spans(x, config.diffusion.scale),
                    jnp.full((2,), schedule.num_timesteps - 1, jnp.int32),
                    method=MomentDiff.denoise)
  np.testing.assert_allclose(out['spans'], ref['pred_spans'][-1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['scores'], jax.nn.softmax(ref['pred_logits'][-1])[..., 0],
                             rtol=1e-5, atol=1e-6)


def test_negative_pair_pass(setup):
  """encode_with_negative == encode on the pair, and on each video with the next text."""
  config, model, schedule, params = setup
  from momentdiff_jax.model import MomentDiff
  b = {k: jnp.asarray(v) for k, v in fixed_batch(3).items()}
  args = (b['video_feat'], b['video_mask'], b['query_feat'], b['query_mask'])
  cond, sal_neg = model.apply(params, *args, method=MomentDiff.encode_with_negative)
  ref = model.apply(params, *args, method=MomentDiff.encode)
  neg = model.apply(params, b['video_feat'], b['video_mask'],
                    jnp.asarray(np.roll(b['query_feat'], -1, 0)),
                    jnp.asarray(np.roll(b['query_mask'], -1, 0)), method=MomentDiff.encode)
  np.testing.assert_allclose(cond['saliency'], ref['saliency'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cond['memory'], ref['memory'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sal_neg, neg['saliency'], rtol=1e-5, atol=1e-6)
  assert not np.allclose(sal_neg, cond['saliency'])


def test_one_to_many_steps_is_the_configured_share_of_the_run():
  import ml_collections
  c = ml_collections.ConfigDict({'num_train_steps': -1, 'num_epochs': 8,
                                 'matcher': {'one_to_many_k': 0, 'one_to_many_until': 0.5}})
  assert ts.one_to_many_steps(c, 93) == 0                 # the release: never
  c.matcher.one_to_many_k = 3
  assert ts.one_to_many_steps(c, 93) == 372               # half of 8 * 93
  c.num_train_steps = 100
  c.matcher.one_to_many_until = 0.25
  assert ts.one_to_many_steps(c, 93) == 25


def test_step_matches_one_to_many_only_in_the_first_share_of_the_run(setup):
  """replica_step's losses equal loss_fn's with one_to_many on before the switch step
  and off after it (recipe o2m + quality + tshift on the same params and RNG)."""
  _, model, schedule, params = setup
  config = small_config()
  config.num_train_steps = 4
  config.matcher.one_to_many_k = 3
  config.loss.label_quality = True
  config.diffusion.t_power = 2.0
  batch = {k: jnp.asarray(v) for k, v in fixed_batch().items()}
  tx = ts.make_optimizer(config, steps_per_epoch=1)
  base = jax.random.PRNGKey(4)
  step = jax.jit(lambda s, b, r: ts.replica_step(model, config, schedule, 1, s, b, r, {}))
  loss = jax.jit(lambda p, b, r, o: ts.loss_fn(p, model, config, schedule, b, r,
                                               one_to_many=o)[1])
  for at, on in ((1, True), (2, False)):     # switch at round(0.5 * 4) = 2
    state = ts.TrainState(step=jnp.asarray(at), params=params, opt_state=tx.init(params))
    _, parts = step(state, batch, base)
    rng = jax.random.fold_in(base, at)
    want, other = loss(params, batch, rng, on), loss(params, batch, rng, not on)
    for key in ('vmr/loss_span', 'vmr/loss_giou', 'vmr/loss_label'):
      np.testing.assert_allclose(parts[key], want[key], rtol=1e-5)
    assert not np.allclose(want['vmr/loss_label'], other['vmr/loss_label'])
