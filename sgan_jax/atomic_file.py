"""Files that readers never see half-written.

Each is written beside its destination and renamed over it: a reader (a
rerun of `ablate`, another process of the same run, TensorBoard, a user's
script) sees the old file or the new one, never a truncated one, even when
the writer is killed mid-write.
"""

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

from etils import epath


@contextlib.contextmanager
def open_for_write(path: str | os.PathLike[str], binary: bool = False
                   ) -> Iterator[IO[Any]]:
  """Opens a temporary file beside `path`; renames it to `path` on success.

  Args:
    path: destination, a local path or a bucket (gs://...; there the rename
      is a copy, as atomic as the store makes it).
    binary: open in 'wb' rather than 'w'.

  Yields:
    The open file. If the body raises, the temporary file is removed and
    `path` is left as it was.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # pid + random: concurrent writers of one destination never share a file.
  tmp = path.parent / f'{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
  try:
    with tmp.open('wb' if binary else 'w') as f:
      yield f
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """Writes `text` to `path` atomically."""
  with open_for_write(path) as f:
    f.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  """Writes `obj` as indented, key-sorted JSON to `path` atomically."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')
