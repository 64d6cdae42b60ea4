"""One table between our parameters and the release's PyTorch `state_dict`, used both ways.

`build_table(model_cfg, video_dim, text_dim)` lists every tensor of the release's
`MomentDiff.state_dict()` for that config:
  * mapped entries: torch name, torch shape, our param path, and the transform;
  * skipped entries (`path is None`): tensors of modules the release defines but never
    calls (decoder self-attention, the T2V layers' `self_attn_new`, `bbox_embed`,
    `ref_anchor_head`, the two unused contrastive projections, the text position
    embedding unless `text_position='learned'`), and the diffusion-schedule buffers
    (recomputed by `momentdiff_jax.ops.diffusion`).
Mapped entries are derived by rule from our parameter tree (our module names are the
release's, with `x.N` written `x_N` and the `transformer.` wrapper dropped), so the
table cannot drift from the model. Transforms:
  'transpose'  Linear weight (out, in)  <-> kernel (in, out)
  'copy'       biases, LayerNorm weight <-> scale, embeddings, the global token/pos
  'scalar'     PReLU weight (1,)        <-> negative_slope ()
  'rows_T'     rows [a, b) of nn.MultiheadAttention.in_proj_weight, transposed
               (q: [0, D), k: [D, 2D), v: [2D, 3D)) <-> q_proj/k_proj/v_proj kernel
  'rows'       the same rows of in_proj_bias <-> q/k/v_proj bias

Parameter count (Charades SF+C, Dv 2818, Dt 512, release defaults): the table's
non-buffer tensors sum to 8,080,018 (the release's defined count); the mapped ones to
6,523,407 = our model's count = the release's parameters that receive gradients.
"""
import dataclasses
import re
from typing import Mapping, Optional

import numpy as np

from momentdiff_jax.model import abstract_params

# Our top-level modules that live under the release's `transformer.` wrapper.
_TRANSFORMER_MODULES = ('t2v_encoder', 'encoder', 'diffusion_decoder', 'diff_span_embed',
                        'diff_class_embed')
# Registered buffers of the release's Transformer (the diffusion schedule), shape (T,).
_SCHEDULE_BUFFERS = (
    'betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod',
    'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod',
    'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
    'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2')
RELEASE_CONTRASTIVE_HDIM = 64  # release default `--contrastive_hdim`


@dataclasses.dataclass(frozen=True)
class Entry:
  torch_name: str
  torch_shape: tuple
  path: Optional[tuple]            # our param path under 'params'; None = skipped
  transform: str = 'copy'          # see module docstring; 'skip' for skipped entries
  rows: Optional[tuple] = None     # (start, stop) for 'rows' / 'rows_T'
  reason: str = ''                 # why skipped
  is_buffer: bool = False


class ConversionError(ValueError):
  pass


def _torch_module(parts) -> str:
  names = [re.sub(r'^(.*)_(\d+)$', r'\1.\2', p) for p in parts]
  if parts and parts[0] in _TRANSFORMER_MODULES:
    names = ['transformer'] + names
  return '.'.join(names)


def _mapped_entry(path: tuple, shape: tuple) -> Entry:
  leaf, mod = path[-1], path[:-1]
  if len(mod) >= 2 and mod[-1] in ('q_proj', 'k_proj', 'v_proj') and mod[-2] == 'self_attn':
    i = ('q_proj', 'k_proj', 'v_proj').index(mod[-1])
    d = shape[-1]
    prefix = _torch_module(mod[:-1])
    if leaf == 'kernel':
      return Entry(prefix + '.in_proj_weight', (3 * d, shape[0]), path, 'rows_T',
                   (i * d, (i + 1) * d))
    return Entry(prefix + '.in_proj_bias', (3 * d,), path, 'rows', (i * d, (i + 1) * d))
  if not mod:  # global_rep_token / global_rep_pos
    return Entry(leaf, shape, path, 'copy')
  prefix = _torch_module(mod)
  if leaf == 'kernel':
    return Entry(prefix + '.weight', tuple(reversed(shape)), path, 'transpose')
  if leaf == 'negative_slope':
    return Entry(prefix + '.weight', (1,), path, 'scalar')
  if leaf in ('scale', 'embedding'):
    return Entry(prefix + '.weight', shape, path, 'copy')
  if leaf == 'bias':
    return Entry(prefix + '.bias', shape, path, 'copy')
  raise ValueError(f'no release counterpart rule for parameter {"/".join(path)}')


def _skipped(model_cfg, num_timesteps: int) -> list:
  d, n_dec, n_t2v = model_cfg.hidden_dim, model_cfg.dec_layers, model_cfg.t2v_layers
  out = []

  def linear(name, n_in, n_out, reason):
    out.append(Entry(name + '.weight', (n_out, n_in), None, 'skip', reason=reason))
    out.append(Entry(name + '.bias', (n_out,), None, 'skip', reason=reason))

  why = 'decoder self-attention: defined, never called by the release'
  for i in range(n_dec):
    p = f'transformer.diffusion_decoder.layers.{i}.'
    for m in ('sa_qcontent_proj', 'sa_qpos_proj', 'sa_kcontent_proj', 'sa_kpos_proj',
              'sa_v_proj'):
      linear(p + m, d, d, why)
    linear(p + 'self_attn.out_proj', d, d, why)
    out.append(Entry(p + 'norm1.weight', (d,), None, 'skip', reason=why))
    out.append(Entry(p + 'norm1.bias', (d,), None, 'skip', reason=why))
  why = 'T2V second attention (self_attn_new): defined, never called'
  for i in range(n_t2v):
    p = f'transformer.t2v_encoder.layers.{i}.self_attn_new.'
    out.append(Entry(p + 'in_proj_weight', (3 * d, d), None, 'skip', reason=why))
    out.append(Entry(p + 'in_proj_bias', (3 * d,), None, 'skip', reason=why))
    linear(p + 'out_proj', d, d, why)
  why = 'decoder box MLP (bbox_embed): defined, never called'
  for i, (a, b) in enumerate([(d, d), (d, d), (d, 2)]):
    linear(f'transformer.diffusion_decoder.bbox_embed.layers.{i}', a, b, why)
  why = 'decoder anchor head (ref_anchor_head): defined, never called'
  for i, (a, b) in enumerate([(d, d), (d, 1)]):
    linear(f'transformer.diffusion_decoder.ref_anchor_head.layers.{i}', a, b, why)
  why = 'contrastive projection: the contrastive_align loss is off in the release scripts'
  for m in ('contrastive_align_projection_query', 'contrastive_align_projection_txt'):
    linear(m, d, RELEASE_CONTRASTIVE_HDIM, why)
  if model_cfg.text_position != 'learned':
    why = 'text position embedding: unused unless --use_txt_pos (text_position=learned)'
    out.append(Entry('txt_position_embed.position_embeddings.weight', (model_cfg.max_q_l, d),
                     None, 'skip', reason=why))
    out.append(Entry('txt_position_embed.LayerNorm.weight', (d,), None, 'skip', reason=why))
    out.append(Entry('txt_position_embed.LayerNorm.bias', (d,), None, 'skip', reason=why))
  why = 'diffusion schedule buffer: recomputed by momentdiff_jax.ops.diffusion'
  for b in _SCHEDULE_BUFFERS:
    out.append(Entry('transformer.' + b, (num_timesteps,), None, 'skip', reason=why,
                     is_buffer=True))
  return out


def _flat(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _flat(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def build_table(model_cfg, video_dim: int, text_dim: int, num_timesteps: int = 1000) -> list:
  """All release tensors for this config: mapped ones first, then skipped ones."""
  params = abstract_params(model_cfg, video_dim, text_dim)
  mapped = [_mapped_entry(path, tuple(x.shape)) for path, x in _flat(params)]
  return mapped + _skipped(model_cfg, num_timesteps)


def release_param_count(table) -> dict:
  """{'defined': all non-buffer tensors, 'mapped': those we load, 'skipped': the rest}."""
  size = {}
  for e in table:
    if not e.is_buffer:
      size[e.torch_name] = (int(np.prod(e.torch_shape)), e.path is not None)
  defined = sum(n for n, _ in size.values())
  mapped = sum(n for n, m in size.values() if m)
  return {'defined': defined, 'mapped': mapped, 'skipped': defined - mapped}


def _set(tree: dict, path: tuple, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def _get(tree, path: tuple):
  for k in path:
    tree = tree[k]
  return tree


def _strip_module_prefix(state_dict: Mapping) -> dict:
  # A model saved while wrapped in nn.DataParallel carries a 'module.' prefix.
  keys = list(state_dict)
  if keys and all(k.startswith('module.') for k in keys):
    return {k[len('module.'):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def torch_to_flax(state_dict: Mapping, table) -> tuple:
  """Release state_dict (name -> array-like) -> (params, skipped_names).

  Strict: raises ConversionError listing every tensor of the file the table does not
  know, every mapped tensor the file lacks (a parameter of ours left unfilled) and
  every shape mismatch. Skipped entries are matched by name only (their shapes, e.g.
  the contrastive projections' hdim, do not affect our model); skipped tensors absent
  from the file are not an error.
  """
  sd = {k: np.asarray(v) for k, v in _strip_module_prefix(state_dict).items()}
  known = {e.torch_name for e in table}
  unmapped = sorted(set(sd) - known)
  missing, mismatched = [], []
  params, skipped = {}, []
  for e in table:
    if e.path is None:
      if e.torch_name in sd:
        skipped.append(e.torch_name)
      continue
    if e.torch_name not in sd:
      missing.append(f'{e.torch_name} -> {"/".join(e.path)}')
      continue
    x = sd[e.torch_name]
    if tuple(x.shape) != tuple(e.torch_shape):
      mismatched.append(f'{e.torch_name}: file {tuple(x.shape)}, expected {e.torch_shape} '
                        f'(for {"/".join(e.path)})')
      continue
    _set(params, e.path, _forward(e, x.astype(np.float32)))
  problems = []
  if unmapped:
    problems.append('tensors in the checkpoint with no counterpart:\n  ' + '\n  '.join(unmapped))
  if missing:
    problems.append('parameters left unfilled (tensor absent from the checkpoint):\n  '
                    + '\n  '.join(sorted(set(missing))))
  if mismatched:
    problems.append('shape mismatches:\n  ' + '\n  '.join(mismatched))
  if problems:
    raise ConversionError('\n'.join(problems))
  return params, sorted(set(skipped))


def _forward(e: Entry, x: np.ndarray) -> np.ndarray:
  if e.transform == 'copy':
    return x.copy()
  if e.transform == 'transpose':
    return np.ascontiguousarray(x.T)
  if e.transform == 'scalar':
    return x.reshape(())
  if e.transform == 'rows_T':
    return np.ascontiguousarray(x[e.rows[0]:e.rows[1]].T)
  if e.transform == 'rows':
    return x[e.rows[0]:e.rows[1]].copy()
  raise ValueError(e.transform)


def flax_to_torch(params: Mapping, table, skipped_rng: Optional[np.random.RandomState] = None
                  ) -> dict:
  """Our params -> release state_dict (numpy). Skipped tensors are included (random
  normal from `skipped_rng`, buffers zeros) only when `skipped_rng` is given."""
  sd = {}
  for e in table:
    if e.path is None:
      if skipped_rng is not None:
        sd[e.torch_name] = (np.zeros(e.torch_shape, np.float32) if e.is_buffer
                            else skipped_rng.randn(*e.torch_shape).astype(np.float32))
      continue
    x = np.asarray(_get(params, e.path), np.float32)
    if e.transform in ('rows', 'rows_T'):
      full = sd.setdefault(e.torch_name, np.zeros(e.torch_shape, np.float32))
      full[e.rows[0]:e.rows[1]] = x.T if e.transform == 'rows_T' else x
    elif e.transform == 'transpose':
      sd[e.torch_name] = np.ascontiguousarray(x.T)
    elif e.transform == 'scalar':
      sd[e.torch_name] = x.reshape((1,))
    else:
      sd[e.torch_name] = x.copy()
  return sd
