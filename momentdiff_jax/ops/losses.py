"""MomentDiff losses: set-prediction (L_vmr) and saliency (L_sim), as in the release.

Normalizations follow the release's `SetCriterion` (momentdiff/model.py) exactly:
  * span L1: mean over matched spans AND both coordinates (`F.l1_loss(...).mean()`),
    i.e. sum |.| / (2 * #matched in the batch); no DETR num_boxes normalization;
  * GIoU: mean of (1 - GIoU) over matched spans in the batch;
  * label CE: `cross_entropy(weight=[1, eos_coef], reduction='none').mean()`, i.e. the
    per-prediction weighted NLL averaged over all B * N predictions (NOT divided by
    the sum of the weights);
  * each decoder layer is matched on its own outputs; auxiliary layers get the same
    losses with suffix `_{i}`, i = 0 .. Ld - 2; L_sim is computed once.

`example_mask` (optional, `(B,)`) drops dummy padding examples; with it all ones the
values are the release's.
"""
import jax
import jax.numpy as jnp

from momentdiff_jax.ops import matching
from momentdiff_jax.ops import spans as span_ops

FOREGROUND, BACKGROUND = 0, 1


def _layer_losses(logits, pred_spans, tgt_spans, tgt_mask, ex, eos_coef, matcher_cfg,
                  quality=False, one_to_many=False):
  """Losses of one decoder layer. logits / pred_spans `(B, N, 2)`, ex `(B,)`."""
  m = matching.match_batch(logits, pred_spans, tgt_spans, tgt_mask, matcher_cfg,
                           one_to_many=one_to_many)
  tgt_idx = m['tgt_idx_for_pred']                                    # (B, N)
  w = (m['matched'] & (ex[:, None] > 0)).astype(jnp.float32)         # (B, N)
  tgt = jnp.take_along_axis(tgt_spans, jnp.maximum(tgt_idx, 0)[..., None], axis=1)
  tgt = tgt.astype(jnp.float32)
  pred_spans = pred_spans.astype(jnp.float32)
  num = jnp.maximum(w.sum(), 1.0)   # the release would NaN on a batch without GT
  l1 = (jnp.abs(pred_spans - tgt).sum(-1) * w).sum() / (2.0 * num)
  giou = span_ops.elementwise_giou(span_ops.cw_to_se(pred_spans), span_ops.cw_to_se(tgt))
  loss_giou = ((1.0 - giou) * w).sum() / num

  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  matched = m['matched']
  # Quality-aware label (GFL / VarifocalNet): a matched span's foreground target is
  # its IoU with the GT, not 1, so the score that ranks spans at inference is trained
  # to prefer the precise ones.
  pos = logp[..., FOREGROUND]
  if quality:
    q = jax.lax.stop_gradient(jnp.clip(span_ops.elementwise_iou(
        span_ops.cw_to_se(pred_spans), span_ops.cw_to_se(tgt)), 0.0, 1.0))
    pos = q * pos + (1.0 - q) * logp[..., BACKGROUND]
  nll = -jnp.where(matched, pos, logp[..., BACKGROUND])
  cls_w = jnp.where(matched, 1.0, eos_coef)
  n = logits.shape[1]
  loss_label = (cls_w * nll * ex[:, None]).sum() / (n * jnp.maximum(ex.sum(), 1.0))
  # Logged like the release: % of matched predictions not classified foreground.
  correct = (jnp.argmax(logits, -1) == FOREGROUND).astype(jnp.float32)
  class_error = 100.0 * (1.0 - (correct * w).sum() / num)
  return dict(loss_span=l1, loss_giou=loss_giou, loss_label=loss_label,
              class_error=jax.lax.stop_gradient(class_error))


def vmr_losses(pred_logits, pred_spans, span_targets, span_mask, loss_cfg, matcher_cfg,
               example_mask=None, one_to_many=False):
  """Set-prediction losses on every decoder layer.

  Args:
    pred_logits: `(Ld, B, N, 2)` class logits (index 0 = foreground), last = final.
    pred_spans: `(Ld, B, N, 2)` predicted (center, width) in [0, 1].
    span_targets: `(B, M, 2)` GT (center, width); span_mask: `(B, M)`; M <= N.
    loss_cfg: `config.loss` (span_l1, giou, label, eos_coef, aux; `label_quality`:
      matched spans' foreground target is their IoU, off in the release).
    matcher_cfg: `config.matcher` (cost_span, cost_giou, cost_class, one_to_many_k).
    example_mask: optional `(B,)`, 0 for dummy examples.
    one_to_many: bool (may be traced): extend the matching (`match_batch`).
  Returns:
    dict of scalars: `loss_span`, `loss_giou`, `loss_label`, `class_error` (last
    layer), the same with suffix `_{i}` for intermediate layer i when `loss_cfg.aux`,
    and `vmr_total` = sum over included layers of span_l1 * loss_span + giou *
    loss_giou + label * loss_label.
  """
  ld, b = pred_logits.shape[:2]
  ex = (jnp.ones((b,), jnp.float32) if example_mask is None
        else example_mask.astype(jnp.float32))
  layers = list(range(ld)) if loss_cfg.aux else [ld - 1]
  out = {}
  total = 0.0
  for layer in layers:
    d = _layer_losses(pred_logits[layer], pred_spans[layer], span_targets, span_mask,
                      ex, loss_cfg.eos_coef, matcher_cfg,
                      quality=bool(loss_cfg.get('label_quality', False)),
                      one_to_many=one_to_many)
    total = total + (loss_cfg.span_l1 * d['loss_span'] + loss_cfg.giou * d['loss_giou']
                     + loss_cfg.label * d['loss_label'])
    suffix = '' if layer == ld - 1 else f'_{layer}'
    out.update({k + suffix: v for k, v in d.items()})
  out['vmr_total'] = total
  return out


def _bce_with_probs_of_logits(scores, labels):
  """torch BCELoss(sigmoid(scores), labels) elementwise, logs clamped at -100 as
  torch does; log-sigmoid instead of log(sigmoid) for stability. `(B, L)`."""
  log_p = jnp.maximum(jax.nn.log_sigmoid(scores), -100.0)
  log_1mp = jnp.maximum(jax.nn.log_sigmoid(-scores), -100.0)
  return -(labels * log_p + (1.0 - labels) * log_1mp)


def saliency_losses(sal_pos, sal_neg, video_mask, saliency_labels, pos_idx, neg_idx,
                    loss_cfg, example_mask=None):
  """L_sim as the release's `loss_sim`.

  Args:
    sal_pos: `(B, Lv)` saliency scores (logits) of the matching text.
    sal_neg: `(B, Lv)` scores of the negative pass (video paired with the text of the
      next example in the batch).
    video_mask: `(B, Lv)` 1 for real clips.
    saliency_labels: `(B, Lv)` 1 for clips inside the first GT window.
    pos_idx, neg_idx: `(B, P)` int sampled positive / negative clip indices.
    loss_cfg: `config.loss` (sim, sim_variant, sim_margin, sim_temperature).
    example_mask: optional `(B,)`, 0 for dummy examples.
  Returns:
    dict of scalars: `sim_rank` (hinge, x2 as released), `sim_bce`, `sim_contrast`
    (mean log-probability of positive clips, <= 0; subtracted), `loss_sim` (the
    variant's combination), `sim_total` = loss_cfg.sim * loss_sim.
    'charades': loss_sim = rank + bce - contrast.
    'antibias': loss_sim = 10 * rank + 10 * (bce - 0.1 * contrast), i.e. the release's
      commented code, where the contrastive term nets to x1 (10 * 0.1).
  """
  b = sal_pos.shape[0]
  ex = (jnp.ones((b,), jnp.float32) if example_mask is None
        else example_mask.astype(jnp.float32))
  n_ex = jnp.maximum(ex.sum(), 1.0)
  mask = video_mask.astype(jnp.float32)
  labels = saliency_labels.astype(jnp.float32)
  sal_pos = sal_pos.astype(jnp.float32)
  sal_neg = sal_neg.astype(jnp.float32)

  # BCE of sigmoid(score) * mask vs label * mask as the release's nn.BCELoss(): the
  # mean over B x the batch's longest video (its collate pads to that length, padded
  # entries add 0). Our length buckets pad further; dividing by the bucket length
  # instead would make the term heavier the more a batch is padded.
  bce = _bce_with_probs_of_logits(sal_pos, labels * mask) * mask
  longest = jnp.maximum(jnp.max(mask.sum(1) * (ex > 0)), 1.0)
  loss_bce = (bce * ex[:, None]).sum() / (n_ex * longest)

  # Contrastive: positive clips against all clips of both passes.
  scores = jnp.concatenate([sal_pos, sal_neg], axis=1)                   # (B, 2Lv)
  lab2 = jnp.concatenate([labels, jnp.zeros_like(labels)], axis=1)
  mask2 = jnp.concatenate([mask, mask], axis=1)
  scores = mask2 * scores + (1.0 - mask2) * -1e3
  # The release's drop mask (labels > 100) never fires for these labels; kept as is.
  keep = lab2 <= 100
  cur = jnp.where(keep, scores / loss_cfg.sim_temperature, -1e3)
  logits = cur - jnp.max(cur, axis=1, keepdims=True)
  log_prob = logits - jnp.log(jnp.exp(logits).sum(1, keepdims=True) + 1e-6)
  pos = (lab2 >= 1).astype(jnp.float32)
  mean_log_prob_pos = (pos * log_prob * mask2).sum(1) / (pos.sum(1) + 1e-6)  # (B,)
  has_pos = (pos.sum(1) > 0).astype(jnp.float32)
  contrast = (mean_log_prob_pos * has_pos * ex).sum() / n_ex

  # Margin ranking between sampled positive and negative clips of the positive pass.
  pos_scores = jnp.take_along_axis(sal_pos, pos_idx, axis=1)
  neg_scores = jnp.take_along_axis(sal_pos, neg_idx, axis=1)
  p = pos_idx.shape[1]
  hinge = jnp.maximum(loss_cfg.sim_margin + neg_scores - pos_scores, 0.0)
  rank = (hinge * ex[:, None]).sum() / (n_ex * p) * 2.0   # "x2 to keep the scale"

  variant = loss_cfg.get('sim_variant', 'charades')
  if variant == 'charades':
    loss_sim = rank + (loss_bce - contrast)
  elif variant == 'antibias':
    loss_sim = 10.0 * rank + 10.0 * (loss_bce - 0.1 * contrast)
  else:
    raise ValueError(f'unknown sim_variant {variant!r}')
  return dict(sim_rank=rank, sim_bce=loss_bce, sim_contrast=contrast,
              loss_sim=loss_sim, sim_total=loss_cfg.sim * loss_sim)
