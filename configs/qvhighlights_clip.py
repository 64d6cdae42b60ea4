"""QVHighlights with CLIP video features only (2 s clips) and CLIP text: Moment-DETR's video demo setting.

For users without SlowFast weights: `extract_features.py --backbones=clip --clip_len=2`
(or the public `clip_features`) and `build_dataset.py --video_features=FEATS/clip_features`;
`predict.py` then needs only `--clip_weights`. Dv = 512 + 2 TEF with ViT-B/32 (read
from the data). Same hyper-parameters as configs/qvhighlights.py.
"""
from momentdiff_jax.common.config_base import load_config


def get_config():
  return load_config('qvhighlights.py', beside=__file__)
