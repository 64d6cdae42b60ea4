"""Model tests: shapes, masking, hoisted decoder cache, dropout, parameter count.

The numpy references below follow the release's code literally (sequence-first
tensors, per-head `view` + `cat`, `inverse_sigmoid(x).sigmoid()`, the T2V layer's
residual order), in float64, from our parameters; they are the independent check that
our batched/hoisted formulation computes the release's function.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.model import count_params as count
from momentdiff_jax.model import MomentDiff, abstract_params

D, H, FFN, DV, DT = 32, 4, 48, 20, 12
B, LV, LT, N = 2, 10, 6, 5


def small_config(**kw) -> ml_collections.ConfigDict:
  c = base_config().model
  c.hidden_dim, c.num_heads, c.ffn_dim = D, H, FFN
  c.update(kw)
  return c


def make_inputs(seed=0, lv=LV, lt=LT, v_real=(LV, 7), t_real=(4, LT)):
  r = np.random.RandomState(seed)
  vm = (np.arange(lv)[None] < np.array(v_real)[:, None]).astype(np.float32)
  qm = (np.arange(lt)[None] < np.array(t_real)[:, None]).astype(np.float32)
  return dict(video_feat=r.randn(B, lv, DV).astype(np.float32), video_mask=vm,
              query_feat=r.randn(B, lt, DT).astype(np.float32), query_mask=qm)


@pytest.fixture(scope='module')
def setup():
  model = MomentDiff(small_config(), DV, DT)
  inp = make_inputs()
  spans = np.random.RandomState(1).rand(B, N, 2).astype(np.float32)
  spans[0, 0] = [1.2, -0.3]  # outside [0, 1]: exercises the release's clamp
  t = np.array([7, 999], np.int32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), *inp.values(), spans, t)
  # Non-trivial PReLU slopes and LayerNorm affine so that the references see them.
  r = np.random.RandomState(2)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, x: (x + np.float32(0.1) * np.asarray(r.randn(*x.shape), np.float32))
      if jax.tree_util.keystr(p).endswith(("['scale']", "['negative_slope']", "['bias']"))
      else x, variables)
  encode = jax.jit(lambda v, i: model.apply(v, **i, method=MomentDiff.encode))
  prepare = jax.jit(lambda v, c: model.apply(v, c, method=MomentDiff.prepare))
  denoise = jax.jit(lambda v, c, s, t: model.apply(v, c, s, t, method=MomentDiff.denoise))
  return dict(model=model, v=variables, inp=inp, spans=spans, t=t, encode=encode,
              prepare=prepare, denoise=denoise)


# ----------------------------------------------------------------------------- numpy reference
def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def lin(p, x):
  return x @ p['kernel'] + p['bias']


def ln(p, x):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * p['scale'] + p['bias']


def prelu(p, x):
  return np.where(x >= 0, x, p['negative_slope'] * x)


def mlp(p, x, n):
  for i in range(n):
    x = lin(p[f'layers_{i}'], x)
    x = np.maximum(x, 0) if i < n - 1 else x
  return x


def softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def sine_detr(x, feats):
  dim_t = 10000.0 ** (2 * (np.arange(feats) // 2) / feats)
  p = x[..., None] / dim_t
  return np.stack([np.sin(p[..., 0::2]), np.cos(p[..., 1::2])], axis=-1).reshape(p.shape)


def torch_mha(q, k, v, heads, pad, out_proj):
  """torch multi_head_attention_forward without in-projection; q (Lq,B,E), k (Lk,B,E),
  v (Lk,B,Ev), pad (B, Lk) True = padded."""
  lq, b, e = q.shape
  lk = k.shape[0]
  hd, vd = e // heads, v.shape[-1] // heads
  q = (q * hd ** -0.5).reshape(lq, b * heads, hd).transpose(1, 0, 2)
  k = k.reshape(lk, b * heads, hd).transpose(1, 0, 2)
  v = v.reshape(lk, b * heads, vd).transpose(1, 0, 2)
  w = (q @ k.transpose(0, 2, 1)).reshape(b, heads, lq, lk)
  w = np.where(pad[:, None, None, :], -np.inf, w).reshape(b * heads, lq, lk)
  o = (softmax(w) @ v).transpose(1, 0, 2).reshape(lq, b, heads * vd)
  return lin(out_proj, o)


def ref_encode(p, inp):
  """The release's MomentDiff.forward up to the encoder memory (eval mode)."""
  vid, txt = inp['video_feat'].astype(np.float64), inp['query_feat'].astype(np.float64)
  n = len([k for k in p if k.startswith('input_vid_proj_')])
  for i in range(n):
    vid = lin(p[f'input_vid_proj_{i}']['net_1'], ln(p[f'input_vid_proj_{i}']['LayerNorm'], vid))
    txt = lin(p[f'input_txt_proj_{i}']['net_1'], ln(p[f'input_txt_proj_{i}']['LayerNorm'], txt))
    if i < n - 1:
      vid, txt = np.maximum(vid, 0), np.maximum(txt, 0)
  x = np.cumsum(inp['video_mask'].astype(np.float64), 1)
  x = x / (x[:, -1:] + 1e-6) * 2 * math.pi
  pos_vid = sine_detr(x, D)
  lv = vid.shape[1]
  src = np.concatenate([np.broadcast_to(p['global_rep_token'], (B, 1, D)), vid, txt], 1)
  pos = np.concatenate([np.broadcast_to(p['global_rep_pos'], (B, 1, D)), pos_vid,
                        np.zeros_like(txt)], 1)
  pad = np.concatenate([np.zeros((B, 1), bool), inp['video_mask'] == 0,
                        inp['query_mask'] == 0], 1)
  src, pos = src.transpose(1, 0, 2), pos.transpose(1, 0, 2)
  for i in range(2):
    lp = p['t2v_encoder'][f'layers_{i}']
    a = lp['self_attn']
    ps = src + pos
    q, k, v = ps[1:lv + 1], ps[lv + 1:], src[lv + 1:]
    s2 = torch_mha(lin(a['q_proj'], q), lin(a['k_proj'], k), lin(a['v_proj'], v), H,
                   pad[:, lv + 1:], a['out_proj'])
    s2 = src[1:lv + 1] + s2
    s3 = lin(lp['linear2'], prelu(lp['activation'], lin(lp['linear1'], ln(lp['norm1'], s2))))
    s2 = ln(lp['norm2'], s2 + s3)
    src = np.concatenate([src[:1], s2, src[lv + 1:]], 0)
  src, pos, pad = src[:lv + 1], pos[:lv + 1], pad[:, :lv + 1]
  for i in range(2):
    lp = p['encoder'][f'layers_{i}']
    a = lp['self_attn']
    qk = src + pos
    s2 = torch_mha(lin(a['q_proj'], qk), lin(a['k_proj'], qk), lin(a['v_proj'], src), H, pad,
                   a['out_proj'])
    src = ln(lp['norm1'], src + s2)
    s2 = lin(lp['linear2'], prelu(lp['activation'], lin(lp['linear1'], src)))
    src = ln(lp['norm2'], src + s2)
  memory = src[1:].transpose(1, 0, 2)
  return memory, pos_vid, lin(p['contrastive_align_projection_vid'], memory)[..., 0]


def ref_decode(p, memory, pos, mask, spans, t):
  """The release's DiffDecoder + heads (eval mode), condition projected in every layer."""
  dp = p['diffusion_decoder']
  x = np.clip(spans.astype(np.float64), 0, 1)
  span = 1 / (1 + np.exp(-np.log(np.maximum(x, 1e-3) / np.maximum(1 - x, 1e-3))))
  half = D // 2
  te = t[:, None] * np.exp(np.arange(half) * -(math.log(10000) / (half - 1)))[None]
  te = np.concatenate([np.sin(te), np.cos(te)], -1)
  out = lin(dp['noise_embed']['layers_0'], span) + 0.1 * te[:, None]
  out = out.transpose(1, 0, 2)                                      # (N, B, D)
  mem, kpos_in = memory.transpose(1, 0, 2), pos.transpose(1, 0, 2)  # (L, B, D)
  pad = mask == 0
  nq, lk, hd = out.shape[0], mem.shape[0], D // H
  inter = []
  for i in range(2):
    c = span.transpose(1, 0, 2) * 2 * math.pi
    sine = np.concatenate([sine_detr(c[..., 0], D // 2), sine_detr(c[..., 1], D // 2)], -1)
    query_pos = mlp(dp['ref_point_head'], sine, 1)
    if i > 0:
      sine = sine * mlp(dp['query_scale'], out, 2)
    lp = dp[f'layers_{i}']
    q = lin(lp['ca_qcontent_proj'], out)
    k = lin(lp['ca_kcontent_proj'], mem)
    v = lin(lp['ca_v_proj'], mem)
    k_pos = mlp(lp['ca_kpos_proj'], kpos_in, 3)
    if i == 0:
      q = q + lin(lp['ca_qpos_proj'], query_pos)
      k = k + k_pos
    qs = lin(lp['ca_qpos_sine_proj'], sine).reshape(nq, B, H, hd)
    q = np.concatenate([q.reshape(nq, B, H, hd), qs], 3).reshape(nq, B, 2 * D)
    k = np.concatenate([k.reshape(lk, B, H, hd), k_pos.reshape(lk, B, H, hd)], 3)
    k = k.reshape(lk, B, 2 * D)
    tgt2 = torch_mha(q, k, v, H, pad, lp['cross_attn']['out_proj'])
    tgt = ln(lp['norm2'], out + tgt2)
    out = ln(lp['norm3'], tgt + lin(lp['linear2'], prelu(lp['activation'],
                                                        lin(lp['linear1'], tgt))))
    inter.append(ln(dp['norm'], out))
  hs = np.stack(inter).transpose(0, 2, 1, 3)                        # (Ld, B, N, D)
  logits = lin(p['diff_class_embed'], hs)
  spans_out = 1 / (1 + np.exp(-lin(p['diff_span_embed']['layers_0'], hs)))
  return logits, spans_out


# ----------------------------------------------------------------------------- tests
def test_shapes(setup):
  s = setup
  cond = s['encode'](s['v'], s['inp'])
  assert cond['memory'].shape == (B, LV, D) and cond['pos'].shape == (B, LV, D)
  assert cond['mask'].shape == (B, LV) and cond['saliency'].shape == (B, LV)
  cache = s['prepare'](s['v'], cond)
  assert cache['layers'][0]['key'].shape == (B, LV, H, 2 * D // H)
  assert cache['layers'][1]['value'].shape == (B, LV, H, D // H)
  out = s['denoise'](s['v'], cache, s['spans'], s['t'])
  assert out['pred_logits'].shape == (2, B, N, 2)
  assert out['pred_spans'].shape == (2, B, N, 2)
  assert out['pred_logits'].dtype == jnp.float32
  assert np.all((out['pred_spans'] > 0) & (out['pred_spans'] < 1))


def test_matches_release_reference(setup):
  """encode and prepare+denoise (hoisted) equal the release's computation, in which the
  decoder projects the condition inside every layer."""
  s = setup
  p = _np(s['v']['params'])
  cond = s['encode'](s['v'], s['inp'])
  memory, pos, sal = ref_encode(p, s['inp'])
  np.testing.assert_allclose(cond['pos'], pos, atol=1e-5)
  np.testing.assert_allclose(cond['memory'], memory, atol=1e-4)
  np.testing.assert_allclose(cond['saliency'], sal, atol=1e-4)
  out = s['denoise'](s['v'], s['prepare'](s['v'], cond), s['spans'], s['t'])
  logits, spans = ref_decode(p, np.asarray(cond['memory'], np.float64),
                             np.asarray(cond['pos'], np.float64), s['inp']['video_mask'],
                             s['spans'], s['t'])
  np.testing.assert_allclose(out['pred_logits'], logits, atol=1e-4)
  np.testing.assert_allclose(out['pred_spans'], spans, atol=1e-5)


def test_padding_does_not_leak(setup):
  """Extra padded clips / tokens (with garbage features) leave real outputs unchanged."""
  s = setup
  base = make_inputs(seed=3, lv=7, lt=4, v_real=(7, 5), t_real=(4, 3))
  padded = {k: v.copy() for k, v in base.items()}
  r = np.random.RandomState(4)
  padded['video_feat'] = np.concatenate([base['video_feat'],
                                         r.randn(B, 3, DV).astype(np.float32)], 1)
  padded['video_mask'] = np.pad(base['video_mask'], ((0, 0), (0, 3)))
  padded['query_feat'] = np.concatenate([base['query_feat'],
                                         r.randn(B, 2, DT).astype(np.float32)], 1)
  padded['query_mask'] = np.pad(base['query_mask'], ((0, 0), (0, 2)))
  # Garbage inside the already padded part of example 1 must not matter either.
  padded['video_feat'][1, 5:7] = 100.0
  base['video_feat'][1, 5:7] = -100.0
  outs = []
  for inp in (base, padded):
    cond = s['model'].apply(s['v'], **inp, method=MomentDiff.encode)
    cache = s['model'].apply(s['v'], cond, method=MomentDiff.prepare)
    out = s['model'].apply(s['v'], cache, s['spans'], s['t'], method=MomentDiff.denoise)
    outs.append((cond, out))
  (c0, o0), (c1, o1) = outs
  real = base['video_mask'] > 0
  np.testing.assert_allclose(np.asarray(c1['saliency'])[:, :7][real],
                             np.asarray(c0['saliency'])[real], atol=1e-5)
  np.testing.assert_allclose(np.asarray(c1['memory'])[:, :7][real],
                             np.asarray(c0['memory'])[real], atol=1e-5)
  for k in ('pred_logits', 'pred_spans'):
    np.testing.assert_allclose(o1[k], o0[k], atol=1e-5)


def test_dropout(setup):
  s = setup
  args = (*s['inp'].values(), s['spans'], s['t'])
  apply = jax.jit(lambda v, rng, train: s['model'].apply(
      v, *args, train=train, rngs={'dropout': rng}), static_argnums=2)
  e1 = apply(s['v'], jax.random.PRNGKey(1), False)
  e2 = apply(s['v'], jax.random.PRNGKey(2), False)
  t1 = apply(s['v'], jax.random.PRNGKey(1), True)
  t2 = apply(s['v'], jax.random.PRNGKey(2), True)
  for k in e1:
    np.testing.assert_array_equal(e1[k], e2[k])
  assert not np.allclose(t1['pred_spans'], t2['pred_spans'])
  assert not np.allclose(t1['saliency'], e1['saliency'])


def test_bfloat16_compute(setup):
  """bf16 activations with the same float32 params stay close to float32."""
  s = setup
  m16 = MomentDiff(small_config(dtype='bfloat16'), DV, DT)
  args = (*s['inp'].values(), s['spans'], s['t'])
  o32 = s['model'].apply(s['v'], *args)
  o16 = m16.apply(s['v'], *args)
  assert jax.tree.leaves(s['v'])[0].dtype == jnp.float32
  for k in o32:
    assert o16[k].dtype == jnp.float32
    assert np.all(np.isfinite(o16[k]))
  np.testing.assert_allclose(o16['pred_spans'], o32['pred_spans'], atol=0.05)


def test_param_count_charades():
  """Charades SF+C shapes (Dv 2818, Dt 512): the release defines 8,080,018 parameters,
  of which 6,523,407 are used; ours are exactly the used ones (the never-called modules
  are not built; see torch_mapping for the list). The learned text position adds 8,704."""
  cfg = base_config().model
  assert count(abstract_params(cfg, 2818, 512)) == 6_523_407
  cfg.text_position = 'learned'
  assert count(abstract_params(cfg, 2818, 512)) == 6_523_407 + 32 * 256 + 2 * 256
