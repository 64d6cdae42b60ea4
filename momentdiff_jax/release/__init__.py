"""Layer 3: compatibility with the authors' PyTorch release.

* `torch_mapping`: their state_dict <-> our params.
* `release_checkpoint`: reading the files their train.py writes (state_dict + opt).
* `video_sources`: the order of video feature sources a set of weights expects.
"""
