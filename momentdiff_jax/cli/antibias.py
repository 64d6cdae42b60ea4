r"""Writes Charades-STA-Len / -Mom split files by the paper's 80/20 rules.
Console script `momentdiff-antibias`, or `python data_prep/make_antibias_splits.py`,
same flags.

  python data_prep/make_antibias_splits.py --kind=len|mom \
      --train=charades_sta_train_tvr_format.jsonl \
      --test=charades_sta_test_tvr_format.jsonl --output=DIR [--seed=0] \
      [--reference_dir=../shared/data/annotations/charades_len]

Writes DIR/train_<kind>_80.jsonl and DIR/test_<kind>_80.jsonl (the authors' names)
and prints counts, shares and GT length/location statistics, beside those of the
authors' files when --reference_dir holds them. Rules: momentdiff_jax/data/antibias.py.
"""
from absl import flags

from momentdiff_jax.common import app
from momentdiff_jax.data import antibias

FLAGS = flags.FlagValues()
flags.DEFINE_enum('kind', None, ['len', 'mom'], 'Charades-STA-Len or -Mom', required=True,
                  flag_values=FLAGS)
flags.DEFINE_string('train', None, 'original Charades-STA train jsonl', required=True,
                    flag_values=FLAGS)
flags.DEFINE_string('test', None, 'original Charades-STA test jsonl', required=True,
                    flag_values=FLAGS)
flags.DEFINE_string('output', None, 'dir for the two split files', required=True,
                    flag_values=FLAGS)
flags.DEFINE_integer('seed', 0, 'seed of the sampled rows', flag_values=FLAGS)
flags.DEFINE_string('reference_dir', None,
                    "dir with the authors' files, for the comparison table",
                    flag_values=FLAGS)


def _main():
  splits = antibias.make_splits(antibias.read_rows(FLAGS.train),
                                antibias.read_rows(FLAGS.test), FLAGS.kind, FLAGS.seed)
  paths = antibias.write_splits(splits, FLAGS.kind, FLAGS.output)
  print(f'Charades-STA-{FLAGS.kind.capitalize()} (seed {FLAGS.seed}): wrote '
        + ', '.join(paths))
  print(antibias.stats_table(splits, FLAGS.kind, FLAGS.reference_dir))
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
