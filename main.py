"""Trains MomentDiff: `python main.py --config=configs/NAME.py --workdir=DIR`.

The command is `momentdiff_jax/cli/train.py` (also the console script
`momentdiff-train`); `python main.py --help` lists its flags.
"""
import sys

from momentdiff_jax.cli.train import main

if __name__ == '__main__':
  sys.exit(main())
