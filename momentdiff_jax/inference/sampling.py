"""The compiled sampling program: condition once, then one `lax.scan` over DDIM steps.

`make_sample_fn` is the sampler of a run: R >= 1 replicas (params, rng keys and swept
values stacked on a leading axis) on a shared batch. `sample_one` is its body, one
replica's sampler, vmapped by `make_sample_fn`.
"""
from typing import Callable

import jax

from momentdiff_jax.model import MomentDiff
from momentdiff_jax.ops import diffusion
from momentdiff_jax.ops import recipe_ops
from momentdiff_jax.run import replicas as replicas_lib


def make_sample_fn(model: MomentDiff, config, schedule: diffusion.Schedule,
                   steps: int, return_trajectory: bool = False,
                   row_keys: bool = False) -> Callable:
  """`sample(params, video_feat, video_mask, query_feat, query_mask, rngs, hparams)`:
  `sample_one` over R replicas (params (R, ...), rngs (R, key) or with `row_keys`
  (R, B, key), hparams `{swept key: (R,)}`, `{}` without a sweep) on a shared batch;
  every output gains a leading (R,) axis. Inside, `replicas.with_hparams` puts each
  replica's traced values into the config, so one program serves every swept value."""

  def one(params, video_feat, video_mask, query_feat, query_mask, rng, hp):
    cfg = replicas_lib.with_hparams(config, hp)
    return sample_one(model, cfg, schedule, steps, params, video_feat, video_mask,
                      query_feat, query_mask, rng, return_trajectory=return_trajectory,
                      row_keys=row_keys)

  return jax.vmap(one, in_axes=(0, None, None, None, None, 0, 0))


def sample_one(model: MomentDiff, config, schedule: diffusion.Schedule, steps: int,
               params, video_feat, video_mask, query_feat, query_mask, rng,
               return_trajectory: bool = False, row_keys: bool = False) -> dict:
  """One replica's sampler: `params` one model's, `video_feat (B, Lv, Dv)`, `video_mask
  (B, Lv)`, `query_feat (B, Lt, Dt)`, `query_mask (B, Lt)`, `rng` one key, or (B,)
  keys with `row_keys` (`diffusion.ddim_sample`: a row's result is then that of a
  batch of one sampled with its key; Predictor).

  The condition and the decoder's condition-only projections are computed once;
  the DDIM loop (one `lax.scan`) then only runs the N_r query rows per step.
  Returns `spans (B, N, 2)` (center, width), `scores (B, N)` foreground probability,
  `saliency (B, Lv)`, and `trajectory (S, B, N, 2)` when asked.
  """
  dcfg = config.diffusion
  cond = model.apply(params, video_feat, video_mask, query_feat, query_mask, train=False,
                     method=MomentDiff.encode)
  cache = model.apply(params, cond, method=MomentDiff.prepare)

  def denoise_fn(spans, t, prev=None):
    kw = {} if prev is None else {'prev_spans': prev}
    out = model.apply(params, cache, spans, t, train=False, method=MomentDiff.denoise, **kw)
    return out['pred_logits'][-1], out['pred_spans'][-1]

  # More spans than in training = more independent noise draws (the decoder has no
  # self-attention across spans), optionally fused into top-k windows (recipe plus).
  n_spans = int(dcfg.get('eval_num_spans', 0) or dcfg.num_spans)
  shape = (video_feat.shape[0], n_spans, 2)
  res = diffusion.ddim_sample(denoise_fn, rng, shape, schedule, steps, dcfg.eta, dcfg.scale,
                              return_trajectory=return_trajectory, row_keys=row_keys,
                              self_condition=bool(model.config.get('self_condition', False)),
                              renew_threshold=float(dcfg.get('renew_threshold', 0.0)))
  spans, scores = res[0], diffusion.foreground_prob(res[1])
  fusion = dcfg.get('fusion', 'none')
  if fusion not in ('none', 'wbf', 'nms'):
    raise ValueError(f'diffusion.fusion must be none|wbf|nms, got {fusion!r}')
  if fusion != 'none':
    top_k = min(n_spans, max(int(config.max_pred_windows), dcfg.num_spans))
    spans, scores = recipe_ops.fuse_spans(spans, scores, dcfg.fusion_iou, top_k,
                                          average=fusion == 'wbf')
  out = {'spans': spans, 'scores': scores, 'saliency': cond['saliency']}
  if return_trajectory:
    out['trajectory'] = res[2]
  return out
