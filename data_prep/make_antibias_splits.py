r"""Writes Charades-STA-Len / -Mom split files by the paper's 80/20 rules.

  python data_prep/make_antibias_splits.py --kind=len|mom \
      --train=charades_sta_train_tvr_format.jsonl \
      --test=charades_sta_test_tvr_format.jsonl --output=DIR [--seed=0] \
      [--reference_dir=../shared/data/annotations/charades_len]

Writes DIR/train_<kind>_80.jsonl and DIR/test_<kind>_80.jsonl (the authors' names)
and prints counts, shares and GT length/location statistics, beside those of the
authors' files when --reference_dir holds them. Rules: momentdiff_jax/data/antibias.py.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from momentdiff_jax.data import antibias  # pylint: disable=g-import-not-at-top


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__)
  p.add_argument('--kind', required=True, choices=['len', 'mom'])
  p.add_argument('--train', required=True, help='original Charades-STA train jsonl')
  p.add_argument('--test', required=True, help='original Charades-STA test jsonl')
  p.add_argument('--output', required=True, help='dir for the two split files')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--reference_dir', default=None,
                 help="dir with the authors' files, for the comparison table")
  args = p.parse_args(argv)
  splits = antibias.make_splits(antibias.read_rows(args.train),
                                antibias.read_rows(args.test), args.kind, args.seed)
  paths = antibias.write_splits(splits, args.kind, args.output)
  print(f'Charades-STA-{args.kind.capitalize()} (seed {args.seed}): wrote '
        + ', '.join(paths))
  print(antibias.stats_table(splits, args.kind, args.reference_dir))
  return 0


if __name__ == '__main__':
  sys.exit(main())
