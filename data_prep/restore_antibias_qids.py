"""Rewrites the authors' Charades-STA-Len/Mom files with the original qids:
`python data_prep/restore_antibias_qids.py --authors=FILE --original=TRAIN,TEST
--output=OUT.jsonl [--near_text=0.9]`.

The command is `momentdiff_jax/cli/restore_qids.py` (also the console script
`momentdiff-restore-qids`); `--help` lists its flags.
"""
import sys

from momentdiff_jax.cli.restore_qids import main

if __name__ == '__main__':
  sys.exit(main())
