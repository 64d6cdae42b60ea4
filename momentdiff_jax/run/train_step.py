"""The compiled training update of R >= 1 replicas (the sampler is `inference/sampling.py`).

A pure function of (replica-stacked state, shared batch, rngs, swept values) built by
closures over the model and config, so `train.py` can jit it once with explicit
shardings over a `Mesh`.
"""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from momentdiff_jax.model import MomentDiff
from momentdiff_jax.ops import diffusion
from momentdiff_jax.ops import losses as losses_lib
from momentdiff_jax.run import replicas as replicas_lib
from momentdiff_jax.ops import recipe_ops


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """AdamW with step decay x`lr_drop_factor` every `lr_drop_epochs`, global-norm clipping.

  Recipe options (off in the release): `lr_warmup_epochs` (linear warm-up),
  `lr_schedule='cosine'` (instead of the drops), `ema_decay` > 0 (the optimizer state
  also keeps an EMA of the weights, `eval_params`).
  """
  boundaries = {}
  total = max(int(config.num_epochs * steps_per_epoch), int(config.num_train_steps))
  if config.lr_drop_epochs > 0:
    every = int(config.lr_drop_epochs * steps_per_epoch)
    for k in range(1, total // max(every, 1) + 1):
      boundaries[k * every] = config.lr_drop_factor
  warmup = int(round(float(config.get('lr_warmup_epochs', 0.0) or 0.0) * steps_per_epoch))
  kind = config.get('lr_schedule', 'step')
  if kind == 'cosine':
    lr = recipe_ops.warmup_cosine(config.learning_rate, warmup, total)
  elif kind != 'step':
    raise ValueError(f'lr_schedule must be step|cosine, got {kind!r}')
  elif warmup > 0:
    lr = recipe_ops.warmup_step_drops(config.learning_rate, warmup, boundaries)
  else:
    lr = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  chain = []
  # A traced (swept) norm is > 0 by `replicas.sweep_values`.
  if isinstance(config.grad_clip_norm, jax.Array) or config.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain.append(optax.adamw(lr, weight_decay=config.weight_decay))
  decay = float(config.get('ema_decay', 0.0) or 0.0)
  if decay > 0:
    return recipe_ops.with_ema(optax.chain(*chain), decay)
  return optax.chain(*chain)


def eval_params(state: TrainState):
  """What validation and the best checkpoints use: the weights' EMA when kept."""
  return recipe_ops.eval_params(state.params, state.opt_state)


def loss_fn(params, model: MomentDiff, config, schedule: diffusion.Schedule,
            batch: dict[str, jax.Array], rng: jax.Array, one_to_many=False):
  """Total loss and its parts for one batch (global under jit).

  The negative pair for L_sim pairs every video with the next example's text
  (example i gets the text of i + 1) after one shared input projection, as the release
  does; only its saliency is used, so the decoder never runs on it.
  """
  r_enc, r_tgt, r_t, r_noise, r_dec = jax.random.split(rng, 5)
  cond, sal_neg = model.apply(params, batch['video_feat'], batch['video_mask'],
                              batch['query_feat'], batch['query_mask'], train=True,
                              method=MomentDiff.encode_with_negative, rngs={'dropout': r_enc})

  dcfg = config.diffusion
  bsz = batch['video_feat'].shape[0]
  x0 = diffusion.prepare_targets(r_tgt, batch['span_targets'], batch['span_mask'],
                                 dcfg.num_spans, dcfg)
  t = diffusion.sample_timesteps(r_t, bsz, dcfg.timesteps, float(dcfg.get('t_power', 1.0)))
  noise = jax.random.normal(r_noise, x0.shape, x0.dtype)
  x_t = diffusion.q_sample(schedule, diffusion.spans_to_signal(x0, dcfg.scale), t, noise)
  x_t = diffusion.signal_to_spans(x_t, dcfg.scale)
  cache = model.apply(params, cond, method=MomentDiff.prepare)
  prev = None
  if config.model.get('self_condition', False):
    # Analog Bits: a share of the examples first estimate x_0 without gradient, then
    # denoise given that estimate; the rest get zeros ("no estimate yet").
    r_dec, r_first, r_use = jax.random.split(r_dec, 3)
    first = model.apply(params, cache, x_t, t, train=True, method=MomentDiff.denoise,
                        rngs={'dropout': r_first})
    use = jax.random.bernoulli(r_use, dcfg.get('self_cond_prob', 0.5), (bsz, 1, 1))
    prev = jnp.where(use, jax.lax.stop_gradient(first['pred_spans'][-1]), 0.0)
  out = model.apply(params, cache, x_t, t, train=True, method=MomentDiff.denoise,
                    rngs={'dropout': r_dec}, **({} if prev is None else {'prev_spans': prev}))

  vmr = losses_lib.vmr_losses(out['pred_logits'], out['pred_spans'], batch['span_targets'],
                              batch['span_mask'], config.loss, config.matcher,
                              example_mask=batch.get('example_mask'),
                              one_to_many=one_to_many)
  sal = losses_lib.saliency_losses(cond['saliency'], sal_neg,
                                   batch['video_mask'], batch['saliency_labels'],
                                   batch['saliency_pos_idx'], batch['saliency_neg_idx'],
                                   config.loss, example_mask=batch.get('example_mask'))
  total = vmr['vmr_total'] + sal['sim_total']
  parts = {f'vmr/{k}': v for k, v in vmr.items()}
  parts.update({f'sim/{k}': v for k, v in sal.items()})
  parts['total'] = total
  return total, parts


def make_train_step(model: MomentDiff, config, schedule: diffusion.Schedule,
                    steps_per_epoch: int) -> Callable:
  """`step(state, batch, base_rngs, hparams) -> (state, metrics)` of R >= 1 replicas.

  `state` leaves and `base_rngs` carry a leading replica axis (R, ...); `batch` is
  shared; `hparams` is `{swept key: (R,)}` (`replicas.hparams`; `{}` without a sweep).
  Each replica runs `replica_step` with its own seed's RNG and its swept values
  (traced, so the optimizer, losses and diffusion see per-replica values in one
  program); the metrics come back as `{name: (R,)}`.
  """
  return jax.vmap(functools.partial(replica_step, model, config, schedule, steps_per_epoch),
                  in_axes=(0, None, 0, 0))


def one_to_many_steps(config, steps_per_epoch: int) -> int:
  """Train steps (from 0) that match one-to-many: `matcher.one_to_many_until` of the
  run's steps when `matcher.one_to_many_k` > 1, else 0 (the release)."""
  if int(config.matcher.get('one_to_many_k', 0)) <= 1:
    return 0
  total = (config.num_train_steps if config.num_train_steps > 0
           else config.num_epochs * steps_per_epoch)
  return int(round(float(config.matcher.get('one_to_many_until', 0.5)) * total))


def replica_step(model: MomentDiff, config, schedule: diffusion.Schedule,
                 steps_per_epoch: int, state: TrainState, batch, base_rng, hparams):
  """One replica's update, the body `make_train_step` vmaps: its config is `config`
  with `hparams`' values (`replicas.with_hparams`), its optimizer is built from that
  config, and its RNG is `base_rng` folded with the step. Returns (state, metrics)."""
  cfg = replicas_lib.with_hparams(config, hparams)
  tx = make_optimizer(cfg, steps_per_epoch)
  rng = jax.random.fold_in(base_rng, state.step)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, parts), grads = grad_fn(state.params, model, cfg, schedule, batch, rng,
                              one_to_many=state.step < one_to_many_steps(cfg, steps_per_epoch))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  parts['grad_norm'] = optax.tree.norm(grads)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), parts
