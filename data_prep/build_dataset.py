"""Builds a dataset from Moment-DETR-layout feature files:
`python data_prep/build_dataset.py --train=... --test=... --video_features=DIR[,DIR]
--text_features=DIR --clip_len=SECONDS --output=OUT`.

The command is `momentdiff_jax/cli/build.py` (also the console script
`momentdiff-build`); `--help` lists its flags.
"""
import sys

from momentdiff_jax.cli.build import main

if __name__ == '__main__':
  sys.exit(main())
