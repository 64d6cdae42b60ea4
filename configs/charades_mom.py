"""Charades-STA-Mom (anti-bias split on moment location; paper Sec. 4.2), VGG + GloVe.

Release script: momentdiff/scripts/train_anti_charades_mom.sh, the settings of
train_anti_charades_len.sh, so this config is `charades_len.py`'s (see there); the
dataset is built from data/annotations/charades_mom (qids restored the same way), or
re-sampled by data_prep/make_antibias_splits.py --kind=mom.
"""
from momentdiff_jax.common.config_base import load_config


def get_config():
  return load_config('charades_len.py', beside=__file__)
