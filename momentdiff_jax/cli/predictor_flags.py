"""The flags of the commands that load a trained workdir into a Predictor (predict.py,
demo.py): one definition, so they read and default alike in both."""
from absl import flags

# absl then credits the flags below to the command that calls `define` (listed by
# `--help` among its own flags), not to this module.
flags.disclaim_key_flags()


def define(flag_values: flags.FlagValues) -> None:
  """--workdir (required), --clip_weights, --slowfast_weights, --checkpoint and
  --sampling_steps on `flag_values`."""
  kw = dict(flag_values=flag_values)
  flags.DEFINE_string('workdir', None, 'Trained (or converted) run directory.', required=True,
                      **kw)
  flags.DEFINE_string('clip_weights', None,
                      'Hugging Face CLIP directory (CLIPModel.save_pretrained).', **kw)
  flags.DEFINE_string('slowfast_weights', None, 'SlowFast 8x8 R50 checkpoint file.', **kw)
  flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to use.',
                    **kw)
  flags.DEFINE_integer('sampling_steps', None, 'DDIM steps (default: the config\'s).', **kw)
