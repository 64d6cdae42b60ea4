"""Writes Charades-STA-Len / -Mom split files by the paper's 80/20 rules:
`python data_prep/make_antibias_splits.py --kind=len|mom --train=... --test=...
--output=DIR`.

The command is `momentdiff_jax/cli/antibias.py` (also the console script
`momentdiff-antibias`); `--help` lists its flags.
"""
import sys

from momentdiff_jax.cli.antibias import main

if __name__ == '__main__':
  sys.exit(main())
