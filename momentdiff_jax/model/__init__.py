"""The MomentDiff network (flax.linen). See momentdiff.py for the entry points."""
from momentdiff_jax.model.momentdiff import MomentDiff

__all__ = ['MomentDiff']
