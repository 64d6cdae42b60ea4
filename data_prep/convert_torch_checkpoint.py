"""Converts an authors' PyTorch MomentDiff checkpoint into a workdir:
`python data_prep/convert_torch_checkpoint.py --checkpoint=FILE.ckpt
--config=configs/NAME.py --workdir=DIR`.

The command is `momentdiff_jax/cli/convert.py` (also the console script
`momentdiff-convert`); `--help` lists its flags.
"""
import sys

from momentdiff_jax.cli.convert import main

if __name__ == '__main__':
  sys.exit(main())
