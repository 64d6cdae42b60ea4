"""Extracts CLIP / SlowFast clip features and CLIP query features from video files:
`python data_prep/extract_features.py --videos=DIR|GLOB --output=FEATS --clip_len=SECONDS
--backbones=clip[,slowfast] --clip_weights=PATH [--slowfast_weights=PATH] [--queries=JSONL]
[--num_shards=N --shard_index=I | --finalize]`.

The command is `momentdiff_jax/cli/extract.py` (also the console script
`momentdiff-extract`); `--help` lists its flags.
"""
import sys

from momentdiff_jax.cli.extract import main

if __name__ == '__main__':
  sys.exit(main())
