"""Dataset shapes, the error data sources raise, split fingerprints.

Kept apart from the loaders (`input_pipeline`, `tfds_source`,
`cifar10_jpeg`) and free of TensorFlow, so that code which only needs a
dataset's shape or a split's digest (`sample` restoring a run, the resume
checks) never imports a data source.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import hashlib
from typing import Any

import numpy as np


class DataError(ValueError):
  """A data source is missing or unreadable.

  `str(e)` is one line that says how to fix it.
  """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What `load_split` loaded.

  Attributes:
    name: The tfds name: 'mnist', 'cifar10' or 'svhn_cropped'.
    num_classes: Number of label classes.
    image_shape: (H, W, C) of one image.
    num_examples: Examples in the loaded split (after `max_examples`).
    source: Human-readable description of where the pixels came from.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_examples: int
  source: str


# (num_classes, image_shape) per supported dataset.
DATASETS: dict[str, tuple[int, tuple[int, int, int]]] = {
    'mnist': (10, (28, 28, 1)),
    'cifar10': (10, (32, 32, 3)),
    'svhn_cropped': (10, (32, 32, 3)),
}
SUPPORTED_DATASETS = tuple(DATASETS)
SPLITS = ('train', 'test')


def dataset_info(name: str) -> tuple[int, tuple[int, int, int]]:
  """Returns (num_classes, image_shape) of a dataset without loading it.

  Args:
    name: 'mnist', 'cifar10' or 'svhn_cropped'.

  Returns:
    `(num_classes, (H, W, C))`.

  Raises:
    DataError: for an unsupported name.
  """
  check_name(name)
  return DATASETS[name]


def check_name(name: Any) -> None:
  """Raises DataError unless `name` is a supported dataset."""
  if name not in DATASETS:
    raise DataError(
        f'unsupported dataset {name!r}; set data.name to one of'
        f' {", ".join(SUPPORTED_DATASETS)}'
    )


def one_line(error: BaseException, limit: int = 200) -> str:
  """An exception as `Type: message` on one line, to embed in a DataError.

  Args:
    error: the exception.
    limit: most characters of the message kept (the rest becomes '...').

  Returns:
    The type's name, and the message with its whitespace runs collapsed.
  """
  text = ' '.join(str(error).split())
  if len(text) > limit:
    text = text[: limit - 3] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


def fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
  """A digest of a split's labels and pixels, in their order.

  Two loads agree exactly when they would give a run the same examples in the
  same order, whatever the path or source: resuming needs that, and the same
  archives in another folder still qualify.

  Args:
    arrays: a split as `load_split` returns it.

  Returns:
    A hex SHA-256 over the shapes and bytes of `label` and `image`.
  """
  h = hashlib.sha256()
  for key in ('label', 'image'):
    a = np.ascontiguousarray(arrays[key])
    h.update(f'{key}{a.dtype.str}{a.shape}'.encode())
    h.update(memoryview(a).cast('B'))
  return h.hexdigest()
