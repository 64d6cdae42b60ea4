r"""Rewrites the authors' Charades-STA-Len/Mom files with the original Charades-STA qids.
Console script `momentdiff-restore-qids`, or `python data_prep/restore_antibias_qids.py`,
same flags.

  python data_prep/restore_antibias_qids.py \
      --authors=../shared/data/annotations/charades_len/train_len_80.jsonl \
      --original=charades_sta_train_tvr_format.jsonl,charades_sta_test_tvr_format.jsonl \
      --output=DIR/train_len_80.jsonl [--near_text=0.9]

The authors' files reuse qids (their numbering restarts: in train_len_80.jsonl 2,326
rows repeat a qid already used by another query), so text features, which the public
releases key by the original qids, cannot be looked up and build_dataset.py refuses the
file. Every row is matched to the original row with the same vid, query and windows and
takes its qid; nothing else changes. Rows without a match are listed (file line and
row) and left out; `--near_text=R` also maps a row to the original row of the same vid
and windows whose query is at least R similar (the authors fixed a few typos). On the
shared files: Len train 11,633 / 11,633 rows map, Len test 984 / 985, Mom train
6,662 / 6,662, Mom test 1,294 / 1,297 (all four left over map with --near_text=0.9).

Use this to train and test on the authors' exact rows; `make_antibias_splits.py`
re-samples splits by the same rules instead (same counts, other sampled rows).
"""
import json
import os

from absl import flags

from momentdiff_jax.common import app
from momentdiff_jax.common import atomic
from momentdiff_jax.data import antibias

FLAGS = flags.FlagValues()
flags.DEFINE_string('authors', None, "one of the authors' Len/Mom jsonl files", required=True,
                    flag_values=FLAGS)
flags.DEFINE_string('original', None,
                    'comma-separated original Charades-STA jsonl files (train,test)',
                    required=True, flag_values=FLAGS)
flags.DEFINE_string('output', None, 'jsonl to write', required=True, flag_values=FLAGS)
flags.DEFINE_float('near_text', 0.0,
                   '> 0: also map rows whose query differs slightly (difflib ratio)',
                   flag_values=FLAGS)


def _main():
  rows = antibias.read_rows(FLAGS.authors)
  originals = [r for path in FLAGS.original.split(',') for r in antibias.read_rows(path)]
  mapped, unmapped, near = antibias.restore_qids(rows, originals, FLAGS.near_text)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  atomic.write_jsonl(FLAGS.output, mapped)
  print(f'{FLAGS.authors}: {len(mapped)} of {len(rows)} rows mapped to original qids '
        f'-> {FLAGS.output}')
  for line, r, original in near:
    print(f'  near match, line {line}: {r["query"]!r} ~ original {original!r}')
  if unmapped:
    print(f'  {len(unmapped)} rows without a match in {FLAGS.original} (left out):')
    for line, r in unmapped:
      print(f'    line {line}: {json.dumps(r)}')
  return 0


def main(argv=None) -> int:
  return app.run(FLAGS, _main, argv, __doc__)
