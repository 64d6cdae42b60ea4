r"""Parameter counts of the model per module.

  python -m momentdiff_jax.summary --config=configs/charades.py --video_dim=2818 --text_dim=512

(console script `momentdiff-summary`, same flags).

Prints one line per top-level module (and per first-level child), then
`total_params N` as the last line. Nothing is allocated: shapes come from
`jax.eval_shape`. Without --video_dim/--text_dim, `config.video_dim` /
`config.text_dim` are used when the config has them.
"""
import sys
from typing import Optional

from absl import flags
from ml_collections import config_flags

from momentdiff_jax.common import app
from momentdiff_jax.model import abstract_params, count_params as count

FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', flag_values=FLAGS,
                                          lock_config=False)
_VIDEO_DIM = flags.DEFINE_integer('video_dim', None, 'Clip feature size Dv (with TEF).',
                                  flag_values=FLAGS)
_TEXT_DIM = flags.DEFINE_integer('text_dim', None, 'Token feature size Dt.',
                                 flag_values=FLAGS)


def summary_lines(params) -> list[str]:
  lines = []
  for name in sorted(params):
    sub = params[name]
    lines.append(f'{name:<40s} {count(sub):>12,d}')
    if isinstance(sub, dict) and all(isinstance(v, dict) for v in sub.values()) and len(sub) > 1:
      for child in sorted(sub):
        lines.append(f'  {name + "/" + child:<38s} {count(sub[child]):>12,d}')
  lines.append(f'total_params {count(params)}')
  return lines


def _dim(flag_value: Optional[int], config, key: str) -> int:
  if flag_value is not None:
    return flag_value
  value = config.get(key) if hasattr(config, 'get') else None
  if value is None:
    raise app.UsageError(f'--{key} is required (the config has no {key}).')
  return int(value)


def _main():
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required.')
  video_dim = _dim(_VIDEO_DIM.value, config, 'video_dim')
  text_dim = _dim(_TEXT_DIM.value, config, 'text_dim')
  params = abstract_params(config.model, video_dim, text_dim)
  print(f'MomentDiff  video_dim={video_dim} text_dim={text_dim} '
        f'hidden={config.model.hidden_dim} dtype={config.model.dtype}')
  print('\n'.join(summary_lines(params)))
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)


if __name__ == '__main__':
  sys.exit(main())
