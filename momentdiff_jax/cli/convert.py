r"""Convert an authors' PyTorch MomentDiff checkpoint into a momentdiff_jax workdir.
Console script `momentdiff-convert`, or `python data_prep/convert_torch_checkpoint.py`,
same flags.

  python data_prep/convert_torch_checkpoint.py --checkpoint=model_best.ckpt \
      --config=configs/charades.py --workdir=DIR [--overwrite] [--config.data.dir=DATA]

Reads the file the release's train.py writes (`{"model", "optimizer", "lr_scheduler",
"epoch", "opt"}`) or a bare state_dict, with `torch.load(weights_only=True)` allowing
only argparse.Namespace and torch.device beyond tensors and plain containers (no code
from the file runs; anything else is refused by name). Its `opt` sets the config: dims,
layer counts (`enc_layers` sets the T2V stack and the encoder), hidden size, heads,
N_r, `max_q_l`, dataset, clip length, the order of the video feature sources
(`v_feat_dirs`, recorded as `video_sources`) and the training recipe; flags given
explicitly (`--config.KEY=...`, `--video_dim`, `--text_dim`, `--video_sources`) win,
and every conflict with the file is printed. Every tensor is mapped through the one
table in `momentdiff_jax.release.torch_mapping`; DIR gets config.json and the params as its
best checkpoint, which evaluate.py and Predictor load. Strict: an unknown tensor, an
unfilled parameter or a shape mismatch stops the conversion with the full list.

A non-empty DIR is refused, naming what it holds (`--overwrite` replaces it). The
workdir is written whole in a hidden sibling folder and renamed into place: a crash
leaves DIR as it was (or absent), never a half-written workdir.
"""
import os

from absl import flags
from ml_collections import config_flags
import numpy as np

from momentdiff_jax.common import app
from momentdiff_jax.release import release_checkpoint
from momentdiff_jax.release import torch_mapping

FLAGS = flags.FlagValues()
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Release .ckpt file (torch.save dict).',
                                  flag_values=FLAGS)
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', flag_values=FLAGS,
                                          lock_config=False)
_VIDEO_DIM = flags.DEFINE_integer('video_dim', None, 'Dv incl. TEF (default: from the file).',
                                  flag_values=FLAGS)
_TEXT_DIM = flags.DEFINE_integer('text_dim', None, 'Dt (default: from the file).',
                                 flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output workdir.', flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace a non-empty --workdir (refused otherwise).',
                               flag_values=FLAGS)
_VIDEO_SOURCES = flags.DEFINE_list(
    'video_sources', None, 'Video feature sources in the order the weights expect, e.g. '
    'clip_features,slowfast_features (default: the file\'s opt.v_feat_dirs).',
    flag_values=FLAGS)


def infer_dims(sd: dict) -> tuple:
  """(video_dim, text_dim) from the first input projections' LayerNorm sizes."""
  sd = torch_mapping._strip_module_prefix(sd)  # pylint: disable=protected-access
  return (int(sd['input_vid_proj.0.LayerNorm.weight'].shape[0]),
          int(sd['input_txt_proj.0.LayerNorm.weight'].shape[0]))


def convert(sd: dict, config, video_dim: int, text_dim: int) -> tuple:
  """state_dict -> ({'params': tree}, skipped names). Raises ConversionError."""
  table = torch_mapping.build_table(config.model, video_dim, text_dim,
                                    num_timesteps=config.diffusion.timesteps)
  params, skipped = torch_mapping.torch_to_flax(sd, table)
  return {'params': params}, skipped


def check_schedule(sd: dict, config) -> str:
  """Compares the file's alphas_cumprod buffer with our schedule; returns a note."""
  key = 'transformer.alphas_cumprod'
  sd = torch_mapping._strip_module_prefix(sd)  # pylint: disable=protected-access
  if key not in sd:
    return 'no schedule buffer in the file'
  from momentdiff_jax.ops import diffusion  # pylint: disable=g-import-not-at-top
  ours = np.asarray(diffusion.make_schedule(config.diffusion).alphas_cumprod)
  theirs = sd[key]
  if ours.shape != theirs.shape:
    return f'WARNING: schedule length differs (file {theirs.shape[0]}, config {ours.shape[0]})'
  diff = float(np.max(np.abs(ours - theirs)))
  return (f'schedule matches the file (max |d alphas_cumprod| {diff:.1e})' if diff < 1e-5
          else f'WARNING: schedule differs from the file (max |d alphas_cumprod| {diff:.2e})')


def configure(config, sd: dict, opt, explicit: dict) -> tuple:
  """Fills `config` from the file; returns (video_dim, text_dim, report lines)."""
  file_dv, file_dt = infer_dims(sd)
  settings = release_checkpoint.settings_from_opt(opt) if opt else {}
  lines = []
  for name, tdim, opt_key in (('video_dim', file_dv, 'v_feat_dim'),
                              ('text_dim', file_dt, 't_feat_dim')):
    if opt and opt.get(opt_key) is not None and int(opt[opt_key]) != tdim:
      lines.append(f'note: opt.{opt_key} = {opt[opt_key]} but the weights take {tdim} '
                   'inputs; using the weights\' size')
    settings[name] = tdim
  lines += release_checkpoint.apply_settings(config, settings, explicit)
  return int(config.video_dim), int(config.text_dim), lines


def _explicit_settings(config) -> dict:
  """{key: value} given on the command line (they win over the file's opt); the
  dims / sources flags are also written into `config`."""
  explicit = dict(config_flags.get_override_values(FLAGS['config']))
  for name, flag in (('video_dim', _VIDEO_DIM), ('text_dim', _TEXT_DIM),
                     ('video_sources', _VIDEO_SOURCES)):
    if flag.value is not None:
      explicit[name] = flag.value
      with config.unlocked():
        config[name] = flag.value
  return explicit


def _report(sd: dict, opt, config, lines: list) -> None:
  print(f'{_CHECKPOINT.value}: ' + ('run settings read from its opt' if opt else
                                    'a bare state_dict (no opt): settings from the config'))
  for line in lines:
    print(f'  {line}')
  if not config.get('video_sources'):
    print('  WARNING: the order of the video feature sources is unknown (no opt.v_feat_dirs): '
          'pass --video_sources=NAME,NAME so that datasets in another order are matched.')


def _main():
  config = _CONFIG.value
  if config is None or not _CHECKPOINT.value or not _WORKDIR.value:
    raise app.UsageError('--checkpoint, --config and --workdir are required.')
  from momentdiff_jax.run import checkpointing  # pylint: disable=g-import-not-at-top
  refused = checkpointing.converted_workdir_refusal(_WORKDIR.value, _OVERWRITE.value)
  if refused:    # before anything is read or computed
    return app.error(refused)
  try:
    sd, opt = release_checkpoint.load(_CHECKPOINT.value)
  except release_checkpoint.CheckpointError as e:
    return app.error(e)
  video_dim, text_dim, lines = configure(config, sd, opt, _explicit_settings(config))
  _report(sd, opt, config, lines)
  try:
    variables, skipped = convert(sd, config, video_dim, text_dim)
  except torch_mapping.ConversionError as e:
    return app.error(f'conversion failed for {_CHECKPOINT.value} with config '
                     f'{config.data.name} (video_dim {video_dim}, text_dim {text_dim}):\n{e}')
  n = sum(int(np.prod(x.shape)) for x in _leaves(variables))
  print(f'Mapped {n:,d} parameters from {len(sd)} tensors of {_CHECKPOINT.value}.')
  print(f'Skipped {len(skipped)} tensors of modules the release never calls / schedule buffers:')
  for name in skipped:
    print(f'  {name}')
  print(check_schedule(sd, config))
  checkpointing.save_converted(_WORKDIR.value, config, variables, overwrite=_OVERWRITE.value)
  print(f'Wrote {os.path.join(_WORKDIR.value, "config.json")} and the params checkpoint '
        f'under {os.path.join(_WORKDIR.value, "checkpoints")}.')
  return 0


def _leaves(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _leaves(v)
    else:
      yield v


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
