"""Pure pieces of recipe candidates (docs/recipe.md): weight EMA, the learning-rate
schedule, and the fusion of spans from several noise draws.

Each is off in the release recipe; `momentdiff_jax.common.recipes` switches them on.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


# ------------------------------------------------------------------ EMA of weights


def ema_decay_at(count, decay: float):
  """Decay used at update `count` (0-based): min(decay, (1 + count) / (10 + count)),
  so the average forgets its random initial value within the first few dozen steps
  (the warm-up of tf.train.ExponentialMovingAverage's `num_updates`)."""
  count = jnp.asarray(count, jnp.float32)
  return jnp.minimum(decay, (1.0 + count) / (10.0 + count))


def ema_update(ema, params, count, decay: float):
  """ema <- d * ema + (1 - d) * params with d = `ema_decay_at(count, decay)` (pytrees)."""
  d = ema_decay_at(count, decay)
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p.astype(e.dtype), ema, params)


class EmaState(NamedTuple):
  inner: Any      # the wrapped optimizer's state
  ema: Any        # the averaged parameters (same tree as params)
  count: jax.Array


def with_ema(tx: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
  """`tx` that also keeps an EMA of the parameters *after* each update in its state
  (so checkpoints and resumes carry it with the optimizer state)."""

  def init(params):
    # A copy, not `params` themselves: a step that donates the train state would
    # otherwise donate one buffer twice (params and their EMA).
    return EmaState(tx.init(params), jax.tree.map(lambda p: jnp.array(p, copy=True), params),
                    jnp.zeros((), jnp.int32))

  def update(grads, state, params=None):
    updates, inner = tx.update(grads, state.inner, params)
    new_params = optax.apply_updates(params, updates)
    ema = ema_update(state.ema, new_params, state.count, decay)
    return updates, EmaState(inner, ema, state.count + 1)

  return optax.GradientTransformation(init, update)


def eval_params(params, opt_state):
  """The parameters to evaluate: the EMA when the optimizer keeps one, else params."""
  return opt_state.ema if isinstance(opt_state, EmaState) else params


# ------------------------------------------------------------------ LR schedule


def warmup_cosine(base_lr: float, warmup_steps: int, total_steps: int,
                  final_ratio: float = 0.01):
  """lr(step) = base * (step + 1) / warmup during warm-up, then a cosine from base to
  base * final_ratio at `total_steps` (flat after). Works on ints and traced steps."""

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1.0) / max(warmup_steps, 1))
    frac = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
    cos = final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return base_lr * jnp.where(step < warmup_steps, warm, cos)

  return schedule


def warmup_step_drops(base_lr: float, warmup_steps: int, boundaries: dict):
  """Linear warm-up over `warmup_steps`, then the release's piecewise-constant drops."""
  drops = optax.piecewise_constant_schedule(base_lr, boundaries)

  def schedule(step):
    warm = jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1.0) / max(warmup_steps, 1))
    return drops(step) * warm

  return schedule


# ------------------------------------------------------------------ fusion of draws


def _se(cw):
  return jnp.stack([cw[..., 0] - cw[..., 1] / 2, cw[..., 0] + cw[..., 1] / 2], -1)


def _iou_one(a, b):
  """a (2,) start/end vs b (N, 2) -> (N,)."""
  inter = jnp.maximum(0.0, jnp.minimum(a[1], b[:, 1]) - jnp.maximum(a[0], b[:, 0]))
  union = jnp.maximum(a[1], b[:, 1]) - jnp.minimum(a[0], b[:, 0])
  return jnp.where(union > 0, inter / jnp.maximum(union, 1e-12), 0.0)


def fuse_spans(spans, scores, iou_threshold: float, top_k: int, average: bool = True):
  """Greedy clustering of spans from several draws, best score first.

  spans (B, N, 2) (center, width) in [0, 1]; scores (B, N). Step k takes the
  best-scored span still free, clusters every free span with IoU >= iou_threshold to
  it (itself included) and emits the cluster's score-weighted mean start / end
  (`average`, weighted box fusion as Solovyev et al. 2021) or the best span itself
  (NMS), with the best span's score. Emptied slots get score -1.
  Returns (spans (B, top_k, 2) (center, width), scores (B, top_k)).
  """

  def one(sp, sc):
    se = _se(sp.astype(jnp.float32))
    sc = sc.astype(jnp.float32)

    def body(free, _):
      masked = jnp.where(free, sc, -jnp.inf)
      i = jnp.argmax(masked)
      ok = free[i]
      member = free & (_iou_one(se[i], se) >= iou_threshold)
      member = member.at[i].set(ok)
      w = jnp.where(member, sc, 0.0)
      fused = jnp.where(average & (w.sum() > 0), (w[:, None] * se).sum(0) / jnp.maximum(
          w.sum(), 1e-12), se[i])
      out_cw = jnp.stack([(fused[0] + fused[1]) / 2, fused[1] - fused[0]])
      return free & ~member, (jnp.where(ok, out_cw, 0.0), jnp.where(ok, sc[i], -1.0))

    _, (out, out_sc) = jax.lax.scan(body, jnp.ones(sc.shape, bool), None, length=top_k)
    return out, out_sc

  return jax.vmap(one)(spans, scores)


def fuse_spans_reference(spans: np.ndarray, scores: np.ndarray, iou_threshold: float,
                         top_k: int, average: bool = True):
  """Plain-numpy loop version of `fuse_spans` (for tests)."""
  out_sp = np.zeros((spans.shape[0], top_k, 2))
  out_sc = -np.ones((spans.shape[0], top_k))
  for b in range(spans.shape[0]):
    se = np.stack([spans[b, :, 0] - spans[b, :, 1] / 2, spans[b, :, 0] + spans[b, :, 1] / 2], 1)
    free = list(np.argsort(-scores[b], kind='stable'))
    for k in range(top_k):
      if not free:
        break
      i = free[0]
      members = []
      for j in free:
        inter = max(0.0, min(se[i, 1], se[j, 1]) - max(se[i, 0], se[j, 0]))
        union = max(se[i, 1], se[j, 1]) - min(se[i, 0], se[j, 0])
        if j == i or (union > 0 and inter / union >= iou_threshold):
          members.append(j)
      w = scores[b, members]
      f = (w[:, None] * se[members]).sum(0) / w.sum() if average and w.sum() > 0 else se[i]
      out_sp[b, k] = [(f[0] + f[1]) / 2, f[1] - f[0]]
      out_sc[b, k] = scores[b, i]
      free = [j for j in free if j not in members]
  return out_sp, out_sc
