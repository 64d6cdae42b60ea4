"""Moments in a video file for a sentence:
`python predict.py --workdir=DIR --video=FILE --query="TEXT"`.

The command is `momentdiff_jax/cli/predict.py` (also the console script
`momentdiff-predict`); `python predict.py --help` lists its flags.
"""
import sys

from momentdiff_jax.cli.predict import main

if __name__ == '__main__':
  sys.exit(main())
