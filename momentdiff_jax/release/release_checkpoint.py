"""Reading the checkpoint files the authors' release writes, safely, and what they say.

The release's train.py saves `{"model": state_dict, "optimizer": ..., "lr_scheduler":
..., "epoch": int, "opt": opt}` with `opt` the run's `argparse.Namespace` (it holds a
`torch.device`). `load` reads such a file with `torch.load(weights_only=True)` and
allows exactly the two classes it holds beyond tensors and plain containers
(`argparse.Namespace`, `torch.device`); the optimizer and scheduler states are plain
dicts, lists, tuples, numbers and tensors. Any other class or function in the file is
refused by name, so no code from a checkpoint ever runs.

`settings_from_opt` turns `opt` into config values (`OPT_KEYS`), so that a converted
workdir carries the run's dims, layer counts, data settings and the order of its video
feature sources (`v_feat_dirs`) without the user typing them.
"""
import argparse
import os
import re
from typing import Any, Callable, Optional

import numpy as np

from momentdiff_jax.common import config_base

TORCH_HINT = ('PyTorch is needed only to read release checkpoints. Install the CPU wheel, '
              "e.g. `pip install -e '.[torch]'` (or `pip install torch --index-url "
              'https://download.pytorch.org/whl/cpu`).')


class CheckpointError(ValueError):
  pass


def load(path: str) -> tuple[dict, Optional[dict]]:
  """(model state_dict as numpy arrays, `opt` as a plain dict or None) of a file.

  Accepts the release's full checkpoint dict or a bare state_dict. Floating tensors
  become float32.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit(f'torch is not installed. {TORCH_HINT}') from e
  if not os.path.isfile(path):
    raise CheckpointError(f'{path}: no such checkpoint file')
  try:
    with torch.serialization.safe_globals([argparse.Namespace, torch.device]):
      ckpt = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    found = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(e))
    if found:
      raise CheckpointError(
          f'{path}: refused: the file holds `{found.group(1)}`, which a release checkpoint '
          'does not (allowed: tensors, plain containers and numbers, argparse.Namespace, '
          'torch.device). Nothing from the file was run.') from None
    raise CheckpointError(f'{path}: not a readable torch checkpoint: '
                          f'{type(e).__name__}: {str(e).splitlines()[0]}') from None
  if isinstance(ckpt, dict) and 'model' in ckpt:
    sd, opt = ckpt['model'], ckpt.get('opt')
  else:
    sd, opt = ckpt, None
  if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
    raise CheckpointError(f'{path}: no state_dict of tensors under "model" '
                          f'(top-level keys: {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt)})')
  out = {}
  for k, v in sd.items():
    v = v.detach().cpu()
    out[k] = v.float().numpy() if v.is_floating_point() else v.numpy()
  if isinstance(opt, argparse.Namespace):
    opt = vars(opt)
  elif opt is not None and not isinstance(opt, dict):
    raise CheckpointError(f'{path}: "opt" is a {type(opt).__name__}, expected the '
                          'release\'s argparse.Namespace')
  return out, opt


def _dset_name(name: str) -> str:
  name = str(name)
  if name == 'hl':
    return 'qvhighlights'
  if name.startswith('charades'):
    return 'charades'
  if name.startswith('activity'):
    return 'activitynet'
  return name


def source_name(feature_dir: str) -> str:
  """A video feature source's name: the last component of its directory."""
  return os.path.basename(os.path.normpath(str(feature_dir)))


# opt attribute -> [(config key, transform)]; every value the release's model or data
# pipeline depends on (momentdiff/config.py), plus its training hyper-parameters so
# that fine-tuning starts from the run's recipe.
_ident: Callable[[Any], Any] = lambda v: v
OPT_KEYS = {
    'hidden_dim': [('model.hidden_dim', int)],
    'nheads': [('model.num_heads', int)],
    'dim_feedforward': [('model.ffn_dim', int)],
    # The release builds its T2V stack and its encoder both with `enc_layers` layers.
    'enc_layers': [('model.t2v_layers', int), ('model.enc_layers', int)],
    'dec_layers': [('model.dec_layers', int)],
    'n_input_proj': [('model.n_input_proj', int)],
    'dropout': [('model.dropout', float)],
    'input_dropout': [('model.input_dropout', float)],
    'use_txt_pos': [('model.text_position', lambda v: 'learned' if v else 'none')],
    'max_q_l': [('data.max_q_l', int), ('model.max_q_l', int)],
    'max_windows': [('data.max_windows', int)],
    'clip_length': [('data.clip_len', float)],
    'dset_name': [('data.name', _dset_name)],
    'ctx_mode': [('data.use_tef', lambda v: 'tef' in str(v))],
    'no_norm_vfeat': [('data.normalize_video', lambda v: not v)],
    'no_norm_tfeat': [('data.normalize_text', lambda v: not v)],
    'v_feat_dirs': [('video_sources', lambda v: [source_name(d) for d in v])],
    'num_queries': [('diffusion.num_spans', int)],
    'seed': [('seed', int)],
    'bsz': [('batch_size', int)],
    'n_epoch': [('num_epochs', int)],
    'lr': [('learning_rate', float)],
    'wd': [('weight_decay', float)],
    'lr_drop': [('lr_drop_epochs', int)],
    'grad_clip': [('grad_clip_norm', float)],
    'aux_loss': [('loss.aux', bool)],
    'lw_saliency': [('loss.sim', float)],
    'saliency_margin': [('loss.sim_margin', float)],
    'span_loss_coef': [('loss.span_l1', float)],
    'giou_loss_coef': [('loss.giou', float)],
    'label_loss_coef': [('loss.label', float)],
    'eos_coef': [('loss.eos_coef', float)],
    'set_cost_span': [('matcher.cost_span', float)],
    'set_cost_giou': [('matcher.cost_giou', float)],
    'set_cost_class': [('matcher.cost_class', float)],
    'nms_thd': [('nms_threshold', float)],
}


def settings_from_opt(opt: dict) -> dict:
  """{config key: value} for every `OPT_KEYS` attribute present (and not None) in opt."""
  out = {}
  for attr, targets in OPT_KEYS.items():
    v = opt.get(attr)
    if v is None:
      continue
    for key, fn in targets:
      out[key] = fn(v)
  return out


def _same(a, b) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    try:
      return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=0))
    except (TypeError, ValueError):
      return False
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return list(a) == list(b)
  return a == b


def apply_settings(config, settings: dict, explicit: dict) -> list[str]:
  """Writes `settings` (from the file) into `config` unless a key was given explicitly.

  `explicit` maps keys the user set on the command line to their values: those win;
  a conflict with the file is reported. Returns the report lines.
  """
  lines = []
  with config.unlocked():
    for key, value in settings.items():
      if key in explicit:
        if not _same(explicit[key], value):
          lines.append(f'conflict: {key} = {explicit[key]!r} given explicitly, the '
                       f'checkpoint says {value!r}: using {explicit[key]!r}')
        continue
      try:
        old = config_base.get_key(config, key)
      except KeyError:
        old = None
      if old is not None and not _same(old, value):
        lines.append(f'from the checkpoint: {key} = {value!r} (config file: {old!r})')
      config_base.set_key(config, key, list(value) if isinstance(value, tuple) else value)
  return lines
