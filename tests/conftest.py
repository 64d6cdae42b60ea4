"""Session-wide test settings."""
import os
import tempfile

# JAX's persistent compilation cache (on by default in main.py / evaluate.py) goes to a
# directory of this test session, never the user's ~/.cache; subprocesses inherit it.
# Tests that set JAX_COMPILATION_CACHE_DIR themselves keep theirs.
os.environ.setdefault('MOMENTDIFF_COMPILE_CACHE',
                      tempfile.mkdtemp(prefix='momentdiff_test_jax_cache_'))
