"""Reading `.jsonl` files (annotations, predictions) with line-numbered errors."""
import json
from typing import Iterator, List

from momentdiff_jax.common.errors import DataError


def iter_jsonl(path: str) -> Iterator[dict]:
  """Yields the rows of a jsonl file (with `_line`); a malformed line raises
  DataError with file and line."""
  with open(path) as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f'{path}:{lineno}: malformed JSON line ({e.msg} at column '
                        f'{e.colno}): {line.strip()[:120]!r}') from None
      if not isinstance(row, dict):
        raise DataError(f'{path}:{lineno}: expected a JSON object, got '
                        f'{type(row).__name__}')
      row['_line'] = lineno
      yield row


def read_jsonl(path: str) -> List[dict]:
  """Parses a jsonl file; a malformed line raises DataError with file and line."""
  return list(iter_jsonl(path))
