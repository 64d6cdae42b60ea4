"""Files written whole or not at all: a temporary name in the target's folder, then
`os.replace` onto the target (atomic on POSIX within one file system).

A reader, or a run killed at any point, sees either the previous file or the complete
new one, never a truncated file. A process killed mid-write leaves its temporary file
(`.<name>.<random>.tmp`, hidden) beside the target; an exception removes it.
"""
import contextlib
import json
import os
import uuid
from typing import IO, Iterable, Iterator


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w') -> Iterator[IO]:
  """Like `open(path, mode)` for writing ('w' or 'wb'); the file appears at `path`
  only when the block ends without an exception (flushed and fsynced first)."""
  if mode not in ('w', 'wb'):
    raise ValueError(f'atomic_open writes whole files: mode "w" or "wb", not {mode!r}')
  path = os.fspath(path)
  folder, name = os.path.split(os.path.abspath(path))
  tmp = os.path.join(folder, f'.{name}.{uuid.uuid4().hex[:8]}.tmp')
  text_kw = {} if 'b' in mode else {'encoding': 'utf-8'}
  try:
    with open(tmp, mode.replace('w', 'x'), **text_kw) as f:   # 'x': a fresh file
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_open(path) as f:
    f.write(text)


def write_json(path: str, obj, indent: int = 2) -> None:
  with atomic_open(path) as f:
    json.dump(obj, f, indent=indent)


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  """One JSON object per line; `rows` may be a generator (nothing lands at `path` if
  it raises part way)."""
  with atomic_open(path) as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')
