"""Feature extraction backbones (CLIP, SlowFast R50) and video decoding, in JAX."""
