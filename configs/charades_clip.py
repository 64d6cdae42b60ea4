"""Charades-STA with CLIP video features only (1 s clips) and CLIP text.

For users without SlowFast weights: `extract_features.py --backbones=clip --clip_len=1`
(or the public `clip_features`) and `build_dataset.py --video_features=FEATS/clip_features`;
`predict.py` then needs only `--clip_weights`. Dv = 512 + 2 TEF with ViT-B/32 (read
from the data). Same hyper-parameters as configs/charades.py (SlowFast + CLIP).
"""
from momentdiff_jax.common.config_base import load_config


def get_config():
  return load_config('charades.py', beside=__file__)
