"""The datasets SGAN trains on, and the error every data source raises.

Kept apart from the loaders (`input_pipeline`, `tfds_source`,
`cifar10_jpeg`) so that code which only needs a dataset's shape, such as
`sample` restoring a run, never reads data.
"""

from __future__ import annotations

import dataclasses
from typing import Any


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
  """`Type: first line of message`, short enough to embed in a DataError."""
  text = ' '.join(str(error).split())
  if len(text) > limit:
    text = text[: limit - 3] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__

