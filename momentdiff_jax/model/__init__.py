"""The MomentDiff network (flax.linen). See momentdiff.py for the entry points."""
from momentdiff_jax.model.momentdiff import MomentDiff, abstract_params, count_params

__all__ = ['MomentDiff', 'abstract_params', 'count_params']
