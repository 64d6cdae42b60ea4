"""Charades-STA-Len (anti-bias split on moment length; paper Sec. 4.2), VGG + GloVe.

Release script: momentdiff/scripts/train_anti_charades_len.sh (as charades_vgg with
lw_saliency 2). Expects a dataset built from the authors' files (data/annotations/
charades_len) rewritten with the original qids by data_prep/restore_antibias_qids.py;
data_prep/make_antibias_splits.py --kind=len re-samples splits by the same rules instead.
The release keeps L_sim's Charades form; `loss.sim_variant='antibias'` selects its
commented alternative.
"""
from momentdiff_jax.common.config_base import load_config


def get_config():
  c = load_config('charades_vgg.py', beside=__file__)
  c.loss.sim = 2.0
  return c
