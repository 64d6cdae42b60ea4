"""What the benchmark scripts do with their result: one JSON file at `--output`.

Imported as a sibling (`import report`: a script's folder is first on sys.path).
"""
import os
from typing import Callable, Optional

from momentdiff_jax.common import atomic


def write_result(path: Optional[str], result: dict,
                 log: Optional[Callable[[str], None]] = print) -> None:
  """`result` as JSON (indent 1) at `path`, its folder made; written to a temp name and
  renamed, so a killed run leaves no half file. No `path`: nothing. `log`: told
  'wrote PATH' (None: silent)."""
  if not path:
    return
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  atomic.write_json(path, result, indent=1)
  if log is not None:
    log(f'wrote {path}')
