"""Charades-CD (out-of-distribution test split), VGG + GloVe.

Release script: momentdiff/scripts/train_charades_CD.sh: seed 2018, `--enc_layers 3`
(the release builds its T2V stack and its encoder both with `enc_layers` layers,
transformer.py), 3 decoder layers, loss weights span 1 / GIoU 8 / label 8 and the same
matching costs.
Evaluate `--split=test` on the OOD file (build it as the test split) and the IID file
separately.
"""
from momentdiff_jax.common.config_base import load_config


def get_config():
  c = load_config('charades_vgg.py', beside=__file__)
  c.seed = 2018
  c.model.t2v_layers = 3
  c.model.enc_layers = 3
  c.model.dec_layers = 3
  c.loss.span_l1, c.loss.giou, c.loss.label = 1.0, 8.0, 8.0
  c.matcher.cost_span, c.matcher.cost_giou, c.matcher.cost_class = 1.0, 8.0, 8.0
  return c
