"""Layer 1: pure array math, jit/vmap-able, no Flax modules and no I/O.

* `spans`: (center, width) <-> (start, end), pairwise IoU / GIoU.
* `matching`: exact Hungarian assignment inside jit.
* `losses`: the MomentDiff losses (span, GIoU, label, saliency).
* `diffusion`: noise schedule, forward noising, the DDIM loop.
* `metrics`: R1@IoU and mAP as the standalone evaluation defines them.
"""
