"""Session-wide test settings."""
import os
import tempfile

# JAX's persistent compilation cache (on by default in main.py / evaluate.py) goes to a
# directory of this test session, never the user's ~/.cache; subprocesses inherit it.
# Tests that set JAX_COMPILATION_CACHE_DIR themselves keep theirs.
os.environ.setdefault('MOMENTDIFF_COMPILE_CACHE',
                      tempfile.mkdtemp(prefix='momentdiff_test_jax_cache_'))

# Scripts the tests start (`python main.py`, `python data_prep/x.py`, `python -c ...`)
# import this checkout's package, installed or not (no script edits sys.path).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ['PYTHONPATH'] = os.pathsep.join(
    [_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
