"""Charades-STA-Len (anti-bias split on moment length; paper Sec. 4.2), VGG + GloVe.

Release script: momentdiff/scripts/train_anti_charades_len.sh (as charades_vgg with
lw_saliency 2). Split files: data_prep/make_antibias_splits.py --kind=len, or the
authors' files (shared data/annotations/charades_len). The release keeps L_sim's
Charades form; `loss.sim_variant='antibias'` selects its commented alternative.
"""
from configs import charades_vgg


def get_config():
  c = charades_vgg.get_config()
  c.loss.sim = 2.0
  return c
