"""Losses vs straightforward numpy re-implementations of the release's SetCriterion."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from momentdiff_jax.ops import losses

LOSS = dict(span_l1=10.0, giou=1.0, label=4.0, eos_coef=0.1, aux=True, sim=4.0,
            sim_variant='charades', sim_margin=0.2, sim_temperature=0.5)
MATCH = dict(cost_span=10.0, cost_giou=1.0, cost_class=4.0)


def cfgs(**kw):
  d = dict(LOSS)
  d.update(kw)
  return ml_collections.ConfigDict(d), ml_collections.ConfigDict(MATCH)


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def se(x):
  return np.stack([x[..., 0] - x[..., 1] / 2, x[..., 0] + x[..., 1] / 2], -1)


def giou_np(a, b):
  """Pairwise GIoU on se spans (the release's generalized_temporal_iou)."""
  inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
  union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None] - inter
  encl = np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 0], b[None, :, 0])
  return inter / union - (encl - union) / encl


def np_layer(logits, spans, tgt, mask, eos):
  """One layer, release style: scipy matching, then concatenated matched pairs."""
  b, n, _ = logits.shape
  src, dst, idx = [], [], []
  for i in range(b):
    t = tgt[i][mask[i] > 0]
    if len(t) == 0:
      continue
    cost = (10 * np.abs(spans[i][:, None] - t[None]).sum(-1) - giou_np(se(spans[i]), se(t))
            - 4 * softmax(logits[i])[:, :1])
    r, c = scipy_lsa(cost)
    src.append(spans[i][r]); dst.append(t[c]); idx += [(i, k) for k in r]
  src, dst = np.concatenate(src), np.concatenate(dst)
  l1 = np.abs(src - dst).mean()
  g = (1 - np.diag(giou_np(se(src), se(dst)))).mean()
  target = np.ones((b, n), int)
  for i, k in idx:
    target[i, k] = 0
  logp = np.log(softmax(logits))
  nll = -np.take_along_axis(logp, target[..., None], -1)[..., 0]
  w = np.where(target == 0, 1.0, eos)
  return dict(loss_span=l1, loss_giou=g, loss_label=(w * nll).mean())


def random_batch(rng, ld=2, b=6, n=5, m=5):
  logits = rng.normal(size=(ld, b, n, 2))
  spans = np.stack([rng.uniform(0.2, 0.8, (ld, b, n)), rng.uniform(0.05, 0.4, (ld, b, n))], -1)
  tgt = np.stack([rng.uniform(0.2, 0.8, (b, m)), rng.uniform(0.05, 0.4, (b, m))], -1)
  counts = rng.integers(1, m + 1, b)
  mask = (np.arange(m)[None] < counts[:, None]).astype(np.float32)
  return [x.astype(np.float32) for x in (logits, spans, tgt)] + [mask]


@pytest.mark.parametrize('aux', [True, False])
def test_vmr_losses_vs_numpy(aux):
  rng = np.random.default_rng(0)
  logits, spans, tgt, mask = random_batch(rng, ld=3)
  lc, mc = cfgs(aux=aux)
  out = jax.jit(lambda *a: losses.vmr_losses(*a, lc, mc))(logits, spans, tgt, mask)
  total = 0.0
  for layer in range(3):
    if not aux and layer < 2:
      assert f'loss_span_{layer}' not in out
      continue
    ref = np_layer(logits[layer].astype(np.float64), spans[layer].astype(np.float64),
                   tgt.astype(np.float64), mask, 0.1)
    sfx = '' if layer == 2 else f'_{layer}'
    for k, v in ref.items():
      np.testing.assert_allclose(out[k + sfx], v, rtol=1e-5, atol=1e-6, err_msg=k + sfx)
    total += 10 * ref['loss_span'] + ref['loss_giou'] + 4 * ref['loss_label']
  np.testing.assert_allclose(out['vmr_total'], total, rtol=1e-5)


def test_vmr_losses_example_mask_and_grad():
  rng = np.random.default_rng(1)
  logits, spans, tgt, mask = random_batch(rng, b=4)
  lc, mc = cfgs()
  ex = np.array([1, 1, 0, 0], np.float32)
  out = losses.vmr_losses(logits, spans, tgt, mask, lc, mc, example_mask=ex)
  ref = losses.vmr_losses(logits[:, :2], spans[:, :2], tgt[:2], mask[:2], lc, mc)
  for k in ('loss_span', 'loss_giou', 'loss_label', 'vmr_total'):
    np.testing.assert_allclose(out[k], ref[k], rtol=1e-5)
  g = jax.grad(lambda s: losses.vmr_losses(logits, s, tgt, mask, lc, mc)['vmr_total'])(spans)
  assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def np_loss_sim(sal, sal_neg, vmask, labels, pos_idx, neg_idx, variant, margin=0.2, tau=0.5):
  """Line-by-line numpy version of the release's loss_sim."""
  p = 1 / (1 + np.exp(-sal))
  x, y = p * vmask, labels * vmask
  with np.errstate(divide='ignore'):   # log(0) at padded clips, clamped like torch
    bce = -(y * np.maximum(np.log(x), -100) + (1 - y) * np.maximum(np.log(1 - x), -100)).mean()
  s = np.concatenate([sal, sal_neg], 1)
  lab = np.concatenate([labels, np.zeros_like(labels)], 1)
  vm = np.concatenate([vmask, vmask], 1)
  s = vm * s + (1 - vm) * -1e3
  drop = ~(lab > 100)
  pos = lab >= 1
  cur = s * drop / tau + ~drop * -1e3
  lg = cur - cur.max(1, keepdims=True)
  lp = lg - np.log(np.exp(lg).sum(1, keepdims=True) + 1e-6)
  mlpp = (pos * lp * vm).sum(1) / (pos.sum(1) + 1e-6)
  bdm = pos.sum(1) > 0
  r = np.arange(len(sal))
  ps = np.stack([sal[r, pos_idx[:, c]] for c in range(pos_idx.shape[1])], 1)
  ns = np.stack([sal[r, neg_idx[:, c]] for c in range(neg_idx.shape[1])], 1)
  rank = np.clip(margin + ns - ps, 0, None).sum() / (len(ps) * pos_idx.shape[1]) * 2
  if variant == 'charades':
    return rank + bce - (mlpp * bdm).mean()
  return 10 * rank + 10 * (bce - 0.1 * (mlpp * bdm).mean())


@pytest.mark.parametrize('variant', ['charades', 'antibias'])
def test_saliency_losses_vs_numpy(variant):
  rng = np.random.default_rng(2)
  b, lv = 5, 12
  lens = np.array([12, 9, 6, 12, 4])
  vmask = (np.arange(lv)[None] < lens[:, None]).astype(np.float32)
  labels = np.zeros((b, lv), np.float32)
  for i, (s, e) in enumerate([(2, 5), (0, 3), (4, 6), (0, 0), (1, 2)]):
    labels[i, s:e] = 1.0          # example 3 has no positive clip (batch_drop_mask)
  sal = rng.normal(0, 2, (b, lv)).astype(np.float32)
  sal_neg = rng.normal(0, 2, (b, lv)).astype(np.float32)
  pos_idx = np.array([[2, 3], [0, 2], [4, 5], [0, 0], [1, 1]], np.int32)
  neg_idx = np.array([[7, 0], [5, 8], [1, 2], [3, 4], [0, 3]], np.int32)
  lc, _ = cfgs(sim_variant=variant)
  out = jax.jit(lambda *a: losses.saliency_losses(*a, lc))(
      sal, sal_neg, vmask, labels, pos_idx, neg_idx)
  ref = np_loss_sim(sal.astype(np.float64), sal_neg.astype(np.float64), vmask, labels,
                    pos_idx, neg_idx, variant)
  np.testing.assert_allclose(out['loss_sim'], ref, rtol=1e-5)
  np.testing.assert_allclose(out['sim_total'], 4.0 * ref, rtol=1e-5)
  g = jax.grad(lambda s: losses.saliency_losses(s, sal_neg, vmask, labels, pos_idx,
                                                neg_idx, lc)['loss_sim'])(jnp.asarray(sal))
  assert np.all(np.isfinite(g))
  # Padded clips get no gradient.
  assert np.all(np.asarray(g)[vmask == 0] == 0)


def test_saliency_bce_is_the_release_mean_whatever_the_padding():
  """nn.BCELoss over the release's batch (padded to its longest video, 9 clips) equals
  our term on the same examples padded to length buckets 16 and 32, with or without a
  dummy example appended."""
  rng = np.random.default_rng(3)
  lens = np.array([9, 6, 4])
  b, longest = len(lens), int(lens.max())
  sal = rng.normal(0, 2, (b, 32)).astype(np.float32)
  sal_neg = rng.normal(0, 2, (b, 32)).astype(np.float32)
  labels = np.zeros((b, 32), np.float32)
  for i, (s, e) in enumerate([(2, 5), (0, 3), (1, 2)]):
    labels[i, s:e] = 1.0
  pos_idx = np.array([[2, 3], [0, 2], [1, 1]], np.int32)
  neg_idx = np.array([[7, 0], [5, 4], [0, 3]], np.int32)
  vmask = (np.arange(32)[None] < lens[:, None]).astype(np.float32)
  lc, _ = cfgs()
  ref = np_loss_sim(*(x[:, :longest].astype(np.float64) for x in (sal, sal_neg, vmask, labels)),
                    pos_idx, neg_idx, 'charades')
  p = 1 / (1 + np.exp(-sal[:, :longest].astype(np.float64)))
  y, m = labels[:, :longest], vmask[:, :longest]
  ref_bce = (-(y * np.log(p) + (1 - y) * np.log(1 - p)) * m).sum() / (b * longest)
  fn = jax.jit(lambda *a: losses.saliency_losses(*a, lc))
  for lv in (16, 32):
    out = fn(*(x[:, :lv] for x in (sal, sal_neg, vmask, labels)), pos_idx, neg_idx)
    np.testing.assert_allclose(out['sim_bce'], ref_bce, rtol=1e-5)
    np.testing.assert_allclose(out['loss_sim'], ref, rtol=1e-5)
  # A dummy example (example_mask 0) with a longer "video" changes nothing.
  pad = lambda x, v: np.concatenate([x, np.full((1,) + x.shape[1:], v, x.dtype)])
  out = losses.saliency_losses(pad(sal, 1.0), pad(sal_neg, 1.0), pad(vmask, 1.0),
                               pad(labels, 1.0), pad(pos_idx, 0), pad(neg_idx, 1), lc,
                               example_mask=np.array([1, 1, 1, 0], np.float32))
  np.testing.assert_allclose(out['loss_sim'], ref, rtol=1e-5)


def np_one_to_many(cost, valid, k):
  """scipy's one-to-one pairs, then each unmatched row goes to the cheapest valid column
  that has it among its k cheapest rows (loops, no ranks)."""
  n = cost.shape[0]
  cols = np.flatnonzero(valid)
  out = -np.ones(n, int)
  r, c = scipy_lsa(cost[:, cols])
  out[r] = cols[c]
  for i in range(n):
    if out[i] >= 0:
      continue
    near = [j for j in cols if i in np.argsort(cost[:, j], kind='stable')[:k]]
    if near:
      out[i] = min(near, key=lambda j: cost[i, j])
  return out


@pytest.mark.parametrize('k', [2, 3])
def test_one_to_many_vs_loops(k):
  from momentdiff_jax.ops import matching
  rng = np.random.default_rng(k)
  for _ in range(20):
    n, m = 8, int(rng.integers(1, 5))
    cost = rng.normal(size=(n, m)).astype(np.float32)
    valid = np.arange(m) < rng.integers(1, m + 1)
    _, c4r = matching.linear_sum_assignment(jnp.asarray(cost), jnp.asarray(valid))
    got = matching.add_one_to_many(jnp.asarray(cost), jnp.asarray(valid), c4r, k)
    want = np_one_to_many(cost, valid, k)
    np.testing.assert_array_equal(np.asarray(got), want)
    # Every valid GT keeps its one-to-one prediction and has at most k predictions.
    counts = np.bincount(want[want >= 0], minlength=m)
    assert (counts[valid] >= 1).all() and (counts <= k).all() and (counts[~valid] == 0).all()


def test_one_to_many_switch_and_quality_label_vs_numpy():
  rng = np.random.default_rng(7)
  logits, spans, tgt, mask = random_batch(rng, ld=1, b=4, n=6, m=2)
  lc, mc = cfgs(aux=False)
  mc.one_to_many_k = 3
  off = losses.vmr_losses(logits, spans, tgt, mask, lc, mc, one_to_many=False)
  ref = np_layer(logits[0], spans[0], tgt, mask, 0.1)
  for key in ('loss_span', 'loss_giou', 'loss_label'):   # switch off: the release's
    np.testing.assert_allclose(off[key], ref[key], rtol=1e-5)
  # On, with IoU targets: numpy on the one-to-many assignment.
  lc.label_quality = True
  on = jax.jit(lambda *a: losses.vmr_losses(*a, lc, mc, one_to_many=True))(
      logits, spans, tgt, mask)
  lg, sp = logits[0], spans[0]
  l1 = g = nll = 0.0
  count = 0
  for i in range(4):
    valid = mask[i] > 0
    cost = (10 * np.abs(sp[i][:, None] - tgt[i][None]).sum(-1)
            - giou_np(se(sp[i]), se(tgt[i])) - 4 * softmax(lg[i])[:, :1])
    assign = np_one_to_many(cost, valid, 3)
    logp = np.log(softmax(lg[i]))
    for r in range(6):
      if assign[r] < 0:
        nll += -0.1 * logp[r, 1]
        continue
      t = tgt[i][assign[r]]
      l1 += np.abs(sp[i][r] - t).sum()
      gi = giou_np(se(sp[i][r:r + 1]), se(t[None]))[0, 0]
      g += 1 - gi
      a, b = se(sp[i][r]), se(t)
      inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
      q = inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)
      nll += -(q * logp[r, 0] + (1 - q) * logp[r, 1])
      count += 1
  assert count > int(mask.sum())      # the extension added positives
  np.testing.assert_allclose(on['loss_span'], l1 / (2 * count), rtol=1e-5)
  np.testing.assert_allclose(on['loss_giou'], g / count, rtol=1e-5)
  np.testing.assert_allclose(on['loss_label'], nll / (4 * 6), rtol=1e-5)
