"""Input pipeline: whole splits in host memory.

The datasets SGAN trains on (MNIST, SVHN, CIFAR-10) are small enough to hold
in host memory, so `load_split` reads a whole split once into numpy arrays:
`{'image': uint8 (N, H, W, C), 'label': int32 (N,)}`; `batching` then serves
step-indexed batches of them.

Sources, in the order `load_split` tries them:

* prepared arrays: `<data.manual_dir>/{train,test}.npz`, read with no
  TensorFlow at all.
* `cifar10` with `data.manual_dir` set: `cifar10_jpeg`, the
  `cifar10_jpeg_{train,test}.tar` of this environment (a quality-75 JPEG
  re-encoding of CIFAR-10, NOT the original pixels).
* otherwise `tfds_source`: tfds, which downloads (failing fast when offline)
  or, with `data.manual_dir` set, builds offline from the dataset's original
  files there (MNIST's four `.gz` archives, SVHN's `.mat` files).
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import numpy as np

from sgan_jax import cifar10_jpeg
from sgan_jax import datasets
from sgan_jax import tensorflow_cpu
from sgan_jax import tfds_source

# Prepared arrays in data.manual_dir: '<split>.npz' holding `image` uint8
# (N, H, W, C) and `label` (N,), read with no TensorFlow at all.
NPZ_SPLIT_FILE = '{split}.npz'


def load_split(
    data_config: Any, split: str
) -> tuple[dict[str, np.ndarray], datasets.DatasetInfo]:
  """Loads a whole split into host memory.

  Args:
    data_config: `ml_collections.ConfigDict` (or mapping) with `name` and the
      optional `data_dir` (tfds data dir; None = tfds default), `manual_dir`
      (folder of the dataset's original files, for offline use) and
      `max_examples` (keep only the first N examples; for CIFAR-10 from the
      JPEG tars, a class-balanced first N). For tfds datasets `manual_dir` is
      only read when `data_dir` holds no prepared copy yet.
    split: 'train' or 'test'.

  Returns:
    `({'image': uint8 (N, H, W, C), 'label': int32 (N,)}, DatasetInfo)`.

  Raises:
    datasets.DataError: unsupported name or split, or a data source that is
      missing, unreachable or unreadable.
  """
  name = data_config.get('name')
  datasets.check_name(name)
  if split not in datasets.SPLITS:
    raise datasets.DataError(
        f'unsupported split {split!r} for {name}; use one of {datasets.SPLITS}'
    )
  data_dir = _optional_path(data_config.get('data_dir'))
  manual_dir = _optional_path(data_config.get('manual_dir'))
  max_examples = data_config.get('max_examples')
  if max_examples is not None and (
      isinstance(max_examples, bool)
      or not isinstance(max_examples, (int, np.integer))
      or max_examples < 1
  ):
    raise datasets.DataError(
        f'data.max_examples must be a positive int or None, got'
        f' {max_examples!r}'
    )

  start = time.perf_counter()
  npz = {s: os.path.join(manual_dir, NPZ_SPLIT_FILE.format(split=s))
         for s in datasets.SPLITS} if manual_dir is not None else {}
  prepared = [s for s, path in npz.items() if os.path.exists(path)]
  if split in prepared:
    arrays, source = _load_npz(npz[split], max_examples)
  elif prepared:
    # Never train on one source and test on another.
    raise datasets.DataError(
        f'{manual_dir} holds prepared arrays for the '
        f'{", ".join(prepared)} split but no '
        f'{os.path.basename(npz[split])}; add it, or remove the .npz files '
        f'to read the original archives')
  elif tensorflow_cpu.tf is None:
    raise datasets.DataError(
        f'tensorflow/tensorflow-datasets are not installed, so {name} can only'
        f' be read from prepared arrays: put {split}.npz (image uint8 NHWC, '
        'label) in --config.data.manual_dir'
    )
  elif name == 'cifar10' and manual_dir is not None:
    arrays, source = cifar10_jpeg.load(
        manual_dir, data_dir, split, max_examples
    )
  else:
    arrays, source = tfds_source.load(
        name, split, data_dir, manual_dir, max_examples
    )

  num_classes, image_shape = datasets.DATASETS[name]
  images, labels = arrays['image'], arrays['label']
  if images.ndim == 3:  # Tolerate a missing channel axis.
    images = images[..., None]
  if images.shape[1:] != image_shape or len(images) != len(labels):
    raise datasets.DataError(
        f'{name} {split} from {source} has images {images.shape} and labels'
        f' {labels.shape}, expected (N, {", ".join(map(str, image_shape))})'
        ' and (N,); the data is corrupt, delete and re-create it'
    )
  if not len(labels):
    raise datasets.DataError(f'{name} {split} from {source} is empty')
  arrays = {
      'image': np.ascontiguousarray(images, dtype=np.uint8),
      'label': np.ascontiguousarray(labels, dtype=np.int32),
  }
  info = datasets.DatasetInfo(
      name=name,
      num_classes=num_classes,
      image_shape=image_shape,
      num_examples=len(labels),
      source=source,
  )
  logging.info(
      'Loaded %s/%s: %d examples from %s in %.1f s.',
      name, split, info.num_examples, source, time.perf_counter() - start,
  )
  return arrays, info


def _load_npz(
    path: str, max_examples: int | None
) -> tuple[dict[str, np.ndarray], str]:
  try:
    with np.load(path, allow_pickle=False) as f:
      images, labels = f['image'], f['label']
  except (OSError, KeyError, ValueError) as e:
    raise datasets.DataError(
        f'cannot read {path} ({datasets.one_line(e)}); it must hold `image` and'
        ' `label` arrays'
    ) from e
  if max_examples is not None:
    images, labels = images[:max_examples], labels[:max_examples]
  return {'image': images, 'label': labels}, f'prepared arrays {path}'


def _optional_path(path: str | None) -> str | None:
  # Command-line overrides give '' for "unset".
  return os.path.expanduser(path) if path else None
