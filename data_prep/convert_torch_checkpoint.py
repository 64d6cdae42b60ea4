r"""Convert an authors' PyTorch MomentDiff checkpoint into a momentdiff_jax workdir.

  python data_prep/convert_torch_checkpoint.py --checkpoint=model_best.ckpt \
      --config=configs/charades.py --video_dim=2818 --text_dim=512 --workdir=DIR

Reads the checkpoint with `torch.load(..., weights_only=True)` (no code from the file
runs), takes its `model` state_dict, maps every tensor through the one table in
`momentdiff_jax.torch_mapping`, and writes DIR/config.json (the config with
`video_dim`/`text_dim`) and the params as DIR's best checkpoint, which evaluate.py and
Predictor load. Strict: an unknown tensor, an unfilled parameter or a shape mismatch
stops the conversion with the full list. Tensors of modules the release defines but
never calls are listed as skipped. --video_dim/--text_dim default to the sizes found
in the checkpoint.
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from momentdiff_jax import torch_mapping  # pylint: disable=g-import-not-at-top

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Release .ckpt file (torch.save dict).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=False)
_VIDEO_DIM = flags.DEFINE_integer('video_dim', None, 'Dv incl. TEF (default: from the file).')
_TEXT_DIM = flags.DEFINE_integer('text_dim', None, 'Dt (default: from the file).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output workdir.')

TORCH_HINT = ('PyTorch is needed only to read release checkpoints. Install the CPU wheel, '
              "e.g. `pip install -e '.[torch]'` (or `pip install torch --index-url "
              'https://download.pytorch.org/whl/cpu`).')


def load_state_dict(path: str) -> dict:
  """The release checkpoint's model state_dict as numpy arrays (float32 for floats)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(f'torch is not installed. {TORCH_HINT}') from e
  ckpt = torch.load(path, map_location='cpu', weights_only=True)
  sd = ckpt['model'] if isinstance(ckpt, dict) and 'model' in ckpt else ckpt
  out = {}
  for k, v in sd.items():
    v = v.detach().cpu()
    out[k] = v.float().numpy() if v.is_floating_point() else v.numpy()
  return out


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
  from momentdiff_jax import diffusion  # pylint: disable=g-import-not-at-top
  ours = np.asarray(diffusion.make_schedule(config.diffusion).alphas_cumprod)
  theirs = sd[key]
  if ours.shape != theirs.shape:
    return f'WARNING: schedule length differs (file {theirs.shape[0]}, config {ours.shape[0]})'
  diff = float(np.max(np.abs(ours - theirs)))
  return (f'schedule matches the file (max |d alphas_cumprod| {diff:.1e})' if diff < 1e-5
          else f'WARNING: schedule differs from the file (max |d alphas_cumprod| {diff:.2e})')


def save_converted(workdir: str, config, variables) -> None:
  from momentdiff_jax import checkpointing  # pylint: disable=g-import-not-at-top
  checkpointing.save_converted(workdir, config, variables)


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None or not _CHECKPOINT.value or not _WORKDIR.value:
    raise app.UsageError('--checkpoint, --config and --workdir are required.')
  sd = load_state_dict(_CHECKPOINT.value)
  file_dv, file_dt = infer_dims(sd)
  video_dim = _VIDEO_DIM.value or file_dv
  text_dim = _TEXT_DIM.value or file_dt
  try:
    variables, skipped = convert(sd, config, video_dim, text_dim)
  except torch_mapping.ConversionError as e:
    print(f'Conversion failed for {_CHECKPOINT.value} with config {config.data.name} '
          f'(video_dim {video_dim}, text_dim {text_dim}):\n{e}', file=sys.stderr)
    raise SystemExit(1)
  n = sum(int(np.prod(x.shape)) for x in _leaves(variables))
  print(f'Mapped {n:,d} parameters from {len(sd)} tensors of {_CHECKPOINT.value}.')
  print(f'Skipped {len(skipped)} tensors of modules the release never calls / schedule buffers:')
  for name in skipped:
    print(f'  {name}')
  print(check_schedule(sd, config))
  with config.unlocked():
    config.video_dim = int(video_dim)
    config.text_dim = int(text_dim)
  save_converted(_WORKDIR.value, config, variables)
  print(f'Wrote {os.path.join(_WORKDIR.value, "config.json")} and the params checkpoint '
        f'under {os.path.join(_WORKDIR.value, "checkpoints")}.')


def _leaves(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _leaves(v)
    else:
      yield v


if __name__ == '__main__':
  app.run(main)
