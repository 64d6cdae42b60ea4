"""Charades-STA with CLIP video features only (1 s clips) and CLIP text.

For users without SlowFast weights: `extract_features.py --backbones=clip --clip_len=1`
(or the public `clip_features`) and `build_dataset.py --video_features=FEATS/clip_features`;
`predict.py` then needs only `--clip_weights`. Dv = 512 + 2 TEF with ViT-B/32 (read
from the data). Same hyper-parameters as configs/charades.py (SlowFast + CLIP).
"""
from configs import charades


def get_config():
  return charades.get_config()
