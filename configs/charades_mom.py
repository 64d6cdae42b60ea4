"""Charades-STA-Mom (anti-bias split on moment location; paper Sec. 4.2), VGG + GloVe.

Release script: momentdiff/scripts/train_anti_charades_mom.sh (lw_saliency 2).
"""
from configs import charades_vgg


def get_config():
  c = charades_vgg.get_config()
  c.loss.sim = 2.0
  return c
