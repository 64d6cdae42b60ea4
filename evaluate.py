"""Evaluates MomentDiff: `python evaluate.py --workdir=DIR` or
`python evaluate.py --predictions=PREDS.jsonl --ground_truth=GT.jsonl`.

The command is `momentdiff_jax/cli/evaluate.py` (also the console script
`momentdiff-evaluate`); `python evaluate.py --help` lists its flags.
"""
import sys

from momentdiff_jax.cli.evaluate import main

if __name__ == '__main__':
  sys.exit(main())
