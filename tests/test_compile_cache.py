"""The persistent compilation cache's directory rules and the compile timer."""
import os

import jax
import jax.numpy as jnp
from jax.experimental.compilation_cache import compilation_cache as jax_cc

from momentdiff_jax.run import compile_cache


def test_default_dir_precedence(monkeypatch, tmp_path):
  for var in ('JAX_COMPILATION_CACHE_DIR', compile_cache.ENV, 'XDG_CACHE_HOME'):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compile_cache.default_dir() == str(tmp_path / 'home/.cache/momentdiff_jax/jax_cache')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.default_dir() == str(tmp_path / 'xdg/momentdiff_jax/jax_cache')
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / 'ours'))
  assert compile_cache.default_dir() == str(tmp_path / 'ours')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax'))
  assert compile_cache.default_dir() == str(tmp_path / 'jax')


def test_enable_off_and_on_and_timer(tmp_path):
  saved = {k: getattr(jax.config, k) for k in (
      'jax_enable_compilation_cache', 'jax_compilation_cache_dir',
      'jax_compilation_cache_max_size', 'jax_persistent_cache_min_compile_time_secs')}
  try:
    assert compile_cache.enable('off') is None
    assert not jax.config.jax_enable_compilation_cache
    d = compile_cache.enable(str(tmp_path / 'cc'))
    assert d == str(tmp_path / 'cc') and os.path.isdir(d)
    assert jax.config.jax_compilation_cache_dir == d
    # The size cap is what makes JAX lock the directory between processes.
    assert jax.config.jax_compilation_cache_max_size == compile_cache.MAX_BYTES
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    jax_cc.reset_cache()     # JAX decides once per process whether a cache is used
    timer = compile_cache.timer()
    before = timer.programs, timer.seconds
    jax.jit(lambda x: jnp.sin(x) * 3 + x.sum())(jnp.arange(7.0)).block_until_ready()
    assert timer.programs > before[0] and timer.seconds > before[1]
    assert any(n.endswith('-cache') for n in os.listdir(d))   # written to the cache
    assert timer.summary(d).startswith(f'compiled {timer.programs} programs in ')
  finally:
    for k, v in saved.items():
      jax.config.update(k, v)
    jax_cc.reset_cache()
