"""The release <-> momentdiff_jax parameter table, the converter, and layer parity with torch.

Parameter counts (Charades SF+C, Dv 2818, Dt 512): the table's tensors sum to the
release's 8,080,018 defined parameters; the 6,523,407 we map are exactly our model's
parameters and the release's parameters that receive gradients; the 1,556,611 others
belong to modules the release never calls and are listed as skipped.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from momentdiff_jax.common.config_base import base_config
from momentdiff_jax.model import abstract_params
from momentdiff_jax.model import MomentDiff
from momentdiff_jax.model.denoiser import CrossAttention
from momentdiff_jax.model.encoder import EncoderLayer
from momentdiff_jax.model.layers import layer_norm
from momentdiff_jax.release import torch_mapping as tm
from tests import data_fixtures as fx

D, H, FFN, DV, DT = 32, 4, 48, 20, 12
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_cfg():
  c = base_config().model
  c.hidden_dim, c.num_heads, c.ffn_dim = D, H, FFN
  return c


def random_params(cfg, seed=0):
  """Our param tree with distinct random values in every leaf."""
  r = np.random.RandomState(seed)
  shapes = abstract_params(cfg, DV, DT)
  return jax.tree.map(lambda s: np.asarray(r.randn(*s.shape), np.float32), shapes)


@pytest.fixture(scope='module')
def small():
  cfg = small_cfg()
  table = tm.build_table(cfg, DV, DT)
  params = random_params(cfg)
  sd = tm.flax_to_torch(params, table, skipped_rng=np.random.RandomState(1))
  return dict(cfg=cfg, table=table, params=params, sd=sd)


# ------------------------------------------------------------------ table and round trip
def test_release_param_count():
  table = tm.build_table(base_config().model, 2818, 512)
  assert tm.release_param_count(table) == {
      'defined': 8_080_018, 'mapped': 6_523_407, 'skipped': 1_556_611}
  names = [e.torch_name for e in table if e.path is None and not e.is_buffer]
  assert 'transformer.diffusion_decoder.layers.1.sa_qcontent_proj.weight' in names
  assert 'transformer.t2v_encoder.layers.0.self_attn_new.in_proj_weight' in names
  assert 'transformer.diffusion_decoder.bbox_embed.layers.2.weight' in names
  # Layer 1+ has no ca_qpos_proj in the release (keep_query_pos=False).
  assert not any('layers.1.ca_qpos_proj' in e.torch_name for e in table)


def test_round_trip_exact(small):
  params, skipped = tm.torch_to_flax(small['sd'], small['table'])
  flat_src = jax.tree_util.tree_leaves_with_path(small['params'])
  flat_dst = dict(jax.tree_util.tree_leaves_with_path(params))
  assert len(flat_dst) == len(flat_src)
  for path, x in flat_src:
    np.testing.assert_array_equal(flat_dst[path], x, err_msg=jax.tree_util.keystr(path))
  assert len(skipped) == len([e for e in small['table'] if e.path is None])
  # Spot checks written independently of the table: the right tensor, the right transform.
  sd, p = small['sd'], params
  w = sd['transformer.encoder.layers.1.self_attn.in_proj_weight']
  np.testing.assert_array_equal(p['encoder']['layers_1']['self_attn']['k_proj']['kernel'],
                                w[D:2 * D].T)
  b = sd['transformer.t2v_encoder.layers.0.self_attn.in_proj_bias']
  np.testing.assert_array_equal(p['t2v_encoder']['layers_0']['self_attn']['v_proj']['bias'],
                                b[2 * D:])
  np.testing.assert_array_equal(
      p['diffusion_decoder']['layers_0']['ca_kpos_proj']['layers_2']['kernel'],
      sd['transformer.diffusion_decoder.layers.0.ca_kpos_proj.layers.2.weight'].T)
  np.testing.assert_array_equal(
      p['diffusion_decoder']['layers_1']['activation']['negative_slope'],
      sd['transformer.diffusion_decoder.layers.1.activation.weight'][0])
  np.testing.assert_array_equal(p['input_vid_proj_0']['LayerNorm']['scale'],
                                sd['input_vid_proj.0.LayerNorm.weight'])
  np.testing.assert_array_equal(p['input_txt_proj_1']['net_1']['kernel'],
                                sd['input_txt_proj.1.net.1.weight'].T)
  np.testing.assert_array_equal(p['global_rep_pos'], sd['global_rep_pos'])


def test_strict_errors(small):
  sd = dict(small['sd'])
  sd['transformer.some_new_module.weight'] = np.zeros(3, np.float32)
  del sd['transformer.diffusion_decoder.norm.bias']
  sd['transformer.diff_class_embed.weight'] = np.zeros((3, D), np.float32)
  with pytest.raises(tm.ConversionError) as e:
    tm.torch_to_flax(sd, small['table'])
  msg = str(e.value)
  assert 'transformer.some_new_module.weight' in msg
  assert 'transformer.diffusion_decoder.norm.bias' in msg
  assert 'transformer.diff_class_embed.weight: file (3, 32)' in msg
  # A DataParallel 'module.' prefix and absent skipped tensors are fine.
  sd = {'module.' + e.torch_name: small['sd'][e.torch_name]
        for e in small['table'] if e.path is not None}
  _, skipped = tm.torch_to_flax(sd, small['table'])
  assert skipped == []


def test_learned_text_position_is_mapped():
  cfg = small_cfg()
  cfg.text_position = 'learned'
  table = tm.build_table(cfg, DV, DT)
  by_name = {e.torch_name: e for e in table}
  assert by_name['txt_position_embed.position_embeddings.weight'].path == (
      'txt_position_embed', 'position_embeddings', 'embedding')
  assert by_name['txt_position_embed.LayerNorm.weight'].path is not None


# ------------------------------------------------------------------ parity with torch
def test_layer_norm_matches_torch(small):
  params, _ = tm.torch_to_flax(small['sd'], small['table'])
  x = np.random.RandomState(3).randn(2, 5, DV).astype(np.float32) * 3 + 7
  ours = layer_norm(jnp.float32).apply({'params': params['input_vid_proj_0']['LayerNorm']}, x)
  ref = torch.nn.functional.layer_norm(
      torch.from_numpy(x), (DV,), torch.from_numpy(small['sd']['input_vid_proj.0.LayerNorm.weight']),
      torch.from_numpy(small['sd']['input_vid_proj.0.LayerNorm.bias']), eps=1e-5)
  assert np.abs(np.asarray(ours) - ref.numpy()).max() <= 1e-5


def test_encoder_layer_matches_torch(small):
  """Self-attention (torch's own nn.MultiheadAttention fed the release's in_proj) +
  PReLU FFN + post-norms, vs torch from first principles, on converted weights."""
  F = torch.nn.functional
  params, _ = tm.torch_to_flax(small['sd'], small['table'])
  pre = 'transformer.encoder.layers.0.'
  w = {k[len(pre):]: torch.from_numpy(v) for k, v in small['sd'].items() if k.startswith(pre)}
  r = np.random.RandomState(4)
  b, l = 2, 7
  x = r.randn(b, l, D).astype(np.float32)
  pos = r.randn(b, l, D).astype(np.float32)
  mask = np.ones((b, l), np.float32)
  mask[1, 4:] = 0
  ours = EncoderLayer(D, H, FFN, 0.1).apply({'params': params['encoder']['layers_0']},
                                            x, pos, mask, False)
  mha = torch.nn.MultiheadAttention(D, H, dropout=0.1)
  mha.load_state_dict({k[len('self_attn.'):]: v for k, v in w.items()
                       if k.startswith('self_attn.')})
  mha.eval()
  with torch.no_grad():
    src = torch.from_numpy(x).transpose(0, 1)       # (L, B, D) as the release
    qk = src + torch.from_numpy(pos).transpose(0, 1)
    a = mha(qk, qk, src, key_padding_mask=torch.from_numpy(mask == 0))[0]
    src = F.layer_norm(src + a, (D,), w['norm1.weight'], w['norm1.bias'], 1e-5)
    h = F.linear(F.prelu(F.linear(src, w['linear1.weight'], w['linear1.bias']),
                         w['activation.weight']), w['linear2.weight'], w['linear2.bias'])
    ref = F.layer_norm(src + h, (D,), w['norm2.weight'], w['norm2.bias'], 1e-5)
  assert np.abs(np.asarray(ours) - ref.transpose(0, 1).numpy()).max() <= 1e-5


def test_cross_attention_kdim_ne_vdim_matches_torch(small):
  """The decoder's attention: keys/queries of 2D (per head [content | position]),
  values of D, scale (2D/H)^-0.5, key padding, out_proj; torch from first principles
  in the release's sequence-first layout."""
  params, _ = tm.torch_to_flax(small['sd'], small['table'])
  sd = small['sd']
  pre = 'transformer.diffusion_decoder.layers.1.cross_attn.out_proj.'
  r = np.random.RandomState(5)
  b, n, l = 2, 5, 9
  q = r.randn(n, b, 2 * D).astype(np.float32)
  k = r.randn(l, b, 2 * D).astype(np.float32)
  v = r.randn(l, b, D).astype(np.float32)
  mask = np.ones((b, l), np.float32)
  mask[0, 6:] = 0
  hd2, hd = 2 * D // H, D // H
  to_heads = lambda x, c: np.ascontiguousarray(x.transpose(1, 0, 2).reshape(b, -1, H, c))
  ours = CrossAttention(D, 0.1).apply(
      {'params': params['diffusion_decoder']['layers_1']['cross_attn']},
      to_heads(q, hd2), to_heads(k, hd2), to_heads(v, hd), mask, False)
  with torch.no_grad():
    tq = torch.from_numpy(q) * hd2 ** -0.5
    tq = tq.reshape(n, b * H, hd2).transpose(0, 1)
    tk = torch.from_numpy(k).reshape(l, b * H, hd2).transpose(0, 1)
    tv = torch.from_numpy(v).reshape(l, b * H, hd).transpose(0, 1)
    wts = torch.bmm(tq, tk.transpose(1, 2)).view(b, H, n, l)
    wts = wts.masked_fill(torch.from_numpy(mask == 0)[:, None, None, :], float('-inf'))
    wts = torch.softmax(wts.view(b * H, n, l), dim=-1)
    o = torch.bmm(wts, tv).transpose(0, 1).reshape(n, b, D)
    ref = o @ torch.from_numpy(sd[pre + 'weight']).T + torch.from_numpy(sd[pre + 'bias'])
  assert np.abs(np.asarray(ours) - ref.transpose(0, 1).numpy()).max() <= 1e-5


def test_converter_script_writes_workdir(small, tmp_path):
  """torch.save'd release-style checkpoint -> workdir -> restored params are exact."""
  ckpt = tmp_path / 'model_best.ckpt'
  torch.save({'model': {k: torch.from_numpy(v) for k, v in small['sd'].items()},
              'epoch': 3}, str(ckpt))
  cfg_file = tmp_path / 'small.py'
  cfg_file.write_text(
      'from momentdiff_jax.common.config_base import base_config\n'
      'def get_config():\n'
      '  c = base_config()\n'
      f'  c.model.hidden_dim, c.model.num_heads, c.model.ffn_dim = {D}, {H}, {FFN}\n'
      '  return c\n')
  workdir = tmp_path / 'wd'
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
             JAX_PLATFORMS='cpu')
  res = subprocess.run(
      [sys.executable, os.path.join(REPO, 'data_prep', 'convert_torch_checkpoint.py'),
       f'--checkpoint={ckpt}', f'--config={cfg_file}', f'--workdir={workdir}'],
      capture_output=True, text=True, env=env, cwd=str(tmp_path))
  assert res.returncode == 0, res.stdout + res.stderr
  assert 'transformer.diffusion_decoder.layers.0.sa_v_proj.weight' in res.stdout
  from momentdiff_jax.run import checkpointing
  config = checkpointing.load_config(str(workdir))
  assert (config.video_dim, config.text_dim) == (DV, DT)
  _, restored, _ = checkpointing.restore_params(str(workdir))
  for path, x in jax.tree_util.tree_leaves_with_path(small['params']):
    got = restored['params']
    for key in path:
      got = got[key.key]
    np.testing.assert_array_equal(np.asarray(got), x)


RELEASE_DIR = fx.release_dir()


@pytest.mark.skipif(RELEASE_DIR is None,
                    reason='no authors\' release: set MOMENTDIFF_RELEASE_DIR to a checkout of '
                    'it (default ../shared/release, absent here)')
def test_release_model_parity(monkeypatch):
  """The authors' own modules (random init, CPU) vs ours on converted weights.

  Checks the table against the real state_dict (names, shapes) and the whole
  network's outputs (encoder saliency, every decoder layer's logits and spans) for
  fixed noisy spans and steps. Hidden size 256: the release hard-codes 128 sine
  features per span coordinate.
  """
  import types
  d, h, ffn = 256, 8, 64
  cfg = base_config().model
  cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim = d, h, ffn
  monkeypatch.syspath_prepend(RELEASE_DIR)
  # The release hard-codes .cuda(): patched for this test only, never its files.
  monkeypatch.setattr(torch.Tensor, 'cuda', lambda self, *a, **k: self)
  from momentdiff.model import build_model  # pylint: disable=import-outside-toplevel
  args = types.SimpleNamespace(
      device='cpu', hidden_dim=d, dropout=0.1, num_queries=5, nheads=h, dim_feedforward=ffn,
      enc_layers=2, dec_layers=2, pre_norm=False, position_embedding='sine', max_q_l=32,
      input_dropout=0.5, t_feat_dim=DT, v_feat_dim=DV, aux_loss=True,
      contrastive_align_loss=False, contrastive_hdim=64, span_loss_type='l1',
      use_txt_pos=False, n_input_proj=2, a_feat_dir=None, set_cost_span=10, set_cost_giou=1,
      set_cost_class=4, span_loss_coef=10, giou_loss_coef=1, label_loss_coef=4,
      lw_saliency=4, eos_coef=0.1, temperature=0.07, max_v_l=75, saliency_margin=0.2,
      dset_name='charades')
  torch.manual_seed(0)
  model, _ = build_model(args)
  model.eval()
  with torch.no_grad():
    for p in model.parameters():
      if p.dim() == 1:
        p.add_(0.1 * torch.randn_like(p))
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  table = tm.build_table(cfg, DV, DT)
  assert {e.torch_name for e in table} == set(sd)
  params, _ = tm.torch_to_flax(sd, table)
  b, lv, lt, n = 2, 12, 7, 5
  r = np.random.RandomState(0)
  vf, tf = r.randn(b, lv, DV).astype(np.float32), r.randn(b, lt, DT).astype(np.float32)
  vm, qm = np.ones((b, lv), np.float32), np.ones((b, lt), np.float32)
  vm[1, 9:], qm[0, 5:] = 0, 0
  spans = r.rand(b, n, 2).astype(np.float32)
  t = np.array([5, 871])
  T = torch.from_numpy
  with torch.no_grad():
    sv, st = model.input_vid_proj(T(vf)), model.input_txt_proj(T(tf))
    pos_v = model.position_embed(sv, T(vm))
    tok = lambda p: p.reshape(1, 1, -1).repeat(b, 1, 1)
    src = torch.cat([tok(model.global_rep_token), sv, st], 1).transpose(0, 1)
    pos = torch.cat([tok(model.global_rep_pos), pos_v, torch.zeros_like(st)], 1).transpose(0, 1)
    pad = ~torch.cat([torch.ones(b, 1).bool(), T(vm).bool(), T(qm).bool()], 1)
    tr = model.transformer
    src = tr.t2v_encoder(src, src_key_padding_mask=pad, pos=pos, video_length=lv)[:lv + 1]
    mem = tr.encoder(src, src_key_padding_mask=pad[:, :lv + 1], pos=pos[:lv + 1])[1:]
    hs = tr.diffusion_decoder(torch.zeros(n, b, d), T(spans), mem, None, T(t),
                              memory_key_padding_mask=pad[:, 1:lv + 1], pos=pos[1:lv + 1])
    ref = {'pred_logits': tr.diff_class_embed(hs).numpy(),
           'pred_spans': tr.diff_span_embed(hs).sigmoid().numpy(),
           'saliency': model.contrastive_align_projection_vid(mem.transpose(0, 1))[..., 0].numpy()}
  out = MomentDiff(cfg, DV, DT).apply({'params': params}, vf, vm, tf, qm, spans,
                                              t.astype(np.int32))
  for k, v in ref.items():
    assert np.abs(np.asarray(out[k]) - v).max() <= 1e-5, k


# ------------------------------------------------------------------ release checkpoint files
def _release_file(torch, sd, path, opt):
  """A file laid out as the release's train.py saves it: model, AdamW and StepLR state
  (after one real step), epoch, and the run's argparse.Namespace with a torch.device."""
  import argparse
  params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in sd.values()
            if v.dtype == np.float32]
  optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-4)
  scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 40)
  sum(p.sum() for p in params).backward()
  optimizer.step()
  scheduler.step()
  torch.save({'model': {k: torch.from_numpy(v) for k, v in sd.items()},
              'optimizer': optimizer.state_dict(), 'lr_scheduler': scheduler.state_dict(),
              'epoch': 7, 'opt': argparse.Namespace(device=torch.device('cpu'), **opt)},
             str(path))


RELEASE_OPT = dict(
    dset_name='charades', ctx_mode='video_tef', hidden_dim=D, nheads=H, dim_feedforward=FFN,
    enc_layers=3, dec_layers=2, num_queries=5, max_q_l=20, max_windows=5, clip_length=1.0,
    v_feat_dim=DV, t_feat_dim=DT, n_input_proj=2, use_txt_pos=False, input_dropout=0.5,
    dropout=0.1, lr=2e-4, lw_saliency=4.0, seed=42, no_norm_vfeat=False, dset_domain=None,
    v_feat_dirs=['/mnt/x/charades/clip_features', '/mnt/x/charades/slowfast_features'],
    train_log_txt_formatter='{time_str} [Epoch] {epoch:03d}\n', results_dir='results/x')


def test_release_checkpoint_file_converts_with_its_opt(tmp_path):
  """The whole file the release writes -> workdir; the config comes from its `opt`
  (3 T2V + 3 encoder layers from `enc_layers`, D, heads, N_r, sources...), an explicit
  flag wins over it with the conflict printed, and the params are exact."""
  cfg = small_cfg()
  cfg.t2v_layers = cfg.enc_layers = 3
  params = random_params(cfg, seed=3)
  sd = tm.flax_to_torch(params, tm.build_table(cfg, DV, DT),
                        skipped_rng=np.random.RandomState(1))
  ckpt = tmp_path / 'model_best.ckpt'
  _release_file(torch, sd, ckpt, RELEASE_OPT)
  workdir = tmp_path / 'wd'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('a file of the user')
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
             JAX_PLATFORMS='cpu')
  convert = lambda *flags: subprocess.run(
      [sys.executable, os.path.join(REPO, 'data_prep', 'convert_torch_checkpoint.py'),
       f'--checkpoint={ckpt}', f'--config={os.path.join(REPO, "configs", "charades.py")}',
       f'--workdir={workdir}', '--config.learning_rate=0.001', *flags],
      capture_output=True, text=True, env=env, cwd=str(tmp_path))
  res = convert()                # a non-empty workdir: refused, named, untouched
  assert res.returncode == 1
  assert f'{workdir} is not empty (it holds notes.txt): pass --overwrite' in res.stderr
  assert os.listdir(workdir) == ['notes.txt']
  res = convert('--overwrite')
  assert res.returncode == 0, res.stdout + res.stderr
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json']
  assert sorted(os.listdir(tmp_path)) == ['model_best.ckpt', 'wd']
  assert 'conflict: learning_rate = 0.001 given explicitly, the checkpoint says 0.0002' in res.stdout
  from momentdiff_jax.run import checkpointing
  c = checkpointing.load_config(str(workdir))
  assert (c.video_dim, c.text_dim) == (DV, DT)
  assert (c.model.hidden_dim, c.model.num_heads, c.model.ffn_dim) == (D, H, FFN)
  assert (c.model.t2v_layers, c.model.enc_layers, c.model.dec_layers) == (3, 3, 2)
  assert (c.data.max_q_l, c.model.max_q_l, c.diffusion.num_spans) == (20, 20, 5)
  assert (c.data.name, c.data.clip_len, c.data.use_tef) == ('charades', 1.0, True)
  assert list(c.video_sources) == ['clip_features', 'slowfast_features']
  assert c.learning_rate == 0.001
  _, restored, _ = checkpointing.restore_params(str(workdir))
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    got = restored['params']
    for key in path:
      got = got[key.key]
    np.testing.assert_array_equal(np.asarray(got), x)


def test_checkpoint_with_other_globals_is_refused_by_name(tmp_path, small):
  """A class outside the allowed set is named and nothing from the file runs."""
  from momentdiff_jax.release import release_checkpoint
  marker = tmp_path / 'ran'

  class Payload:
    def __reduce__(self):
      return (open, (str(marker), 'w'))

  path = tmp_path / 'evil.ckpt'
  torch.save({'model': {k: torch.from_numpy(v) for k, v in small['sd'].items()},
              'opt': {'hook': Payload()}}, str(path))
  with pytest.raises(release_checkpoint.CheckpointError, match=r'holds `[\w.]*open`'):
    release_checkpoint.load(str(path))
  assert not marker.exists()
  bare = tmp_path / 'bare.ckpt'       # a bare state_dict still loads, without opt
  torch.save({k: torch.from_numpy(v) for k, v in small['sd'].items()}, str(bare))
  sd, opt = release_checkpoint.load(str(bare))
  assert opt is None and set(sd) == set(small['sd'])
