"""MomentDiff in JAX/Flax: diffusion-based video moment retrieval."""

__version__ = '0.1.0'


def __getattr__(name):
  # Lazy so that `import momentdiff_jax` stays cheap and free of orbax/grain imports.
  if name == 'Predictor':
    from momentdiff_jax.inference.predictor import Predictor
    return Predictor
  raise AttributeError(name)
