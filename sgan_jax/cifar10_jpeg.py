"""CIFAR-10 from `cifar10_jpeg_{train,test}.tar`, the offline copy here.

The tars hold a quality-75 JPEG re-encoding of CIFAR-10 (NOT the original
pixels), sorted by class. Full splits are decoded once and cached as `.npz`
beside tfds' data.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
import os
import tarfile
import time

from absl import logging
import numpy as np

from sgan_jax import atomic_file
from sgan_jax import datasets
from sgan_jax import tensorflow_cpu

# CIFAR-10 JPEG tars: members are `<class>/NNNN.jpg`; label = index here.
CLASSES = (
    'airplane', 'automobile', 'bird', 'cat', 'deer',
    'dog', 'frog', 'horse', 'ship', 'truck',
)
SOURCE = 'cifar10 JPEG tars (lossy q75 re-encoding, not the original pixels)'
# Bump when the decoded content or layout of the .npz cache changes.
_CACHE_VERSION = 1
# Images per tf.data element when decoding; large enough to amortise the
# per-element overhead, small enough to spread over the cores.
_DECODE_CHUNK = 1000


def cache_path(data_dir: str | None, split: str) -> str:
  """Where the decoded `split` is cached: `<tfds data dir>/cifar10_jpeg/`.

  Args:
    data_dir: `data.data_dir` (None: `$TFDS_DATA_DIR`, else tfds' default).
    split: 'train' or 'test'.

  Returns:
    A local path, also when the tfds data dir is a bucket.
  """
  # Written with `os`: a bucket (gs://...) data_dir would become a local
  # folder named 'gs:', so the decoded cache then stays on the local disk.
  local = [d for d in (data_dir, os.environ.get('TFDS_DATA_DIR'))
           if d and '://' not in d]
  root = local[0] if local else os.path.join('~', 'tensorflow_datasets')
  return os.path.join(
      os.path.expanduser(root), 'cifar10_jpeg', f'{split}.npz'
  )


def load(
    manual_dir: str,
    data_dir: str | None,
    split: str,
    max_examples: int | None,
) -> tuple[dict[str, np.ndarray], str]:
  """Reads CIFAR-10 from `manual_dir/cifar10_jpeg_<split>.tar`.

  Examples come in a round-robin order over the classes (airplane 0,
  automobile 0, ..., truck 0, airplane 1, ...), so any prefix, and thus any
  `max_examples`, is class-balanced; the tar itself is sorted by class.

  Args:
    manual_dir: Folder with the tars.
    data_dir: Root of the decoded-split cache (None: tfds' default dir).
    split: 'train' or 'test'.
    max_examples: Keep only this many (only their JPEGs are decoded).

  Returns:
    (`{'image', 'label'}`, source description).

  Raises:
    datasets.DataError: a missing or unreadable tar, or a member that is not
      a 32x32 RGB JPEG of a CIFAR-10 class.
  """
  tar_name = f'cifar10_jpeg_{split}.tar'
  tar_path = os.path.join(manual_dir, tar_name)
  if not os.path.isfile(tar_path):
    what = 'does not exist' if not os.path.isdir(manual_dir) else (
        f'lacks {tar_name}'
    )
    raise datasets.DataError(
        f'data.manual_dir={manual_dir} {what}; point it at a folder holding'
        ' cifar10_jpeg_train.tar and cifar10_jpeg_test.tar, or unset it to'
        ' download CIFAR-10 with tfds'
    )
  stat = os.stat(tar_path)
  # The cache is only worth it (and only valid) for the full split; size and
  # mtime detect a replaced tar without hashing 77 MB on every load.
  cache_key = np.array(
      [_CACHE_VERSION, stat.st_size, stat.st_mtime_ns], np.int64
  )
  cache_file = cache_path(data_dir, split)
  if max_examples is None:
    arrays = _read_cache(cache_file, cache_key)
    if arrays is not None:
      return arrays, f'{SOURCE}, cached in {cache_file}'

  start = time.perf_counter()
  try:
    with tarfile.open(tar_path, 'r:') as tar:
      members = _select_members(tar, tar_path, max_examples)
      blobs = [tar.extractfile(m).read() for m, _ in members]
  except (tarfile.TarError, OSError) as e:
    raise datasets.DataError(
        f'could not read {tar_path} ({datasets.one_line(e)}); copy it again'
    ) from e
  labels = np.array([label for _, label in members], np.int32)
  images = _decode_jpegs(blobs, tar_path)
  logging.info(
      'Decoded %d JPEGs from %s in %.1f s.',
      len(blobs), tar_path, time.perf_counter() - start,
  )
  arrays = {'image': images, 'label': labels}
  if max_examples is None:
    _write_cache(cache_file, cache_key, arrays)
  return arrays, f'{SOURCE} from {tar_path}'


def _select_members(
    tar: tarfile.TarFile, tar_path: str, max_examples: int | None
) -> list[tuple[tarfile.TarInfo, int]]:
  """Returns (member, label) in round-robin class order, first max_examples."""
  by_class: dict[int, list[tarfile.TarInfo]] = collections.defaultdict(list)
  # Walks the headers only: for an uncompressed tar, tarfile seeks over the
  # JPEG payloads.
  for member in tar:
    if not member.isfile():
      continue
    class_name, _, file_name = member.name.partition('/')
    if class_name not in CLASSES or not file_name.endswith('.jpg'):
      raise datasets.DataError(
          f'{tar_path} has an unexpected member {member.name!r} (expected'
          ' <class>/NNNN.jpg with class in airplane..truck); copy it again'
      )
    by_class[CLASSES.index(class_name)].append(member)
  if not by_class:
    raise datasets.DataError(f'{tar_path} holds no JPEGs; copy it again')
  for members in by_class.values():
    members.sort(key=lambda m: m.name)
  selected = []
  longest = max(len(members) for members in by_class.values())
  for i in range(longest):
    for label in sorted(by_class):
      if i < len(by_class[label]):
        selected.append((by_class[label][i], label))
    if max_examples is not None and len(selected) >= max_examples:
      break
  return selected[:max_examples]


def _decode_jpegs(blobs: list[bytes], tar_path: str) -> np.ndarray:
  """Decodes same-size RGB JPEGs to uint8 (N, 32, 32, 3).

  TF decodes batches on all cores (50,000 CIFAR JPEGs: 2.8 s on 2 cores,
  against 7.4 s for Pillow, which holds the GIL). INTEGER_ACCURATE is
  libjpeg's JDCT_ISLOW, the method Pillow uses: the pixels are identical to a
  Pillow decode (TF's default fast IDCT differs by up to 5 levels).

  Args:
    blobs: JPEG file contents.
    tar_path: For error messages.

  Returns:
    The decoded images, in the order of `blobs`.
  """
  tf = tensorflow_cpu.tf
  height, width, channels = datasets.DATASETS['cifar10'][1]

  def decode_chunk(chunk):
    return tf.map_fn(
        lambda b: tf.io.decode_jpeg(
            b, channels=channels, dct_method='INTEGER_ACCURATE'
        ),
        chunk,
        fn_output_signature=tf.TensorSpec(
            (height, width, channels), tf.uint8
        ),
    )

  images = np.empty((len(blobs), height, width, channels), np.uint8)
  ds = (
      tf.data.Dataset.from_tensor_slices(tf.constant(blobs, tf.string))
      .batch(_DECODE_CHUNK)
      # Parallel map keeps element order (deterministic by default).
      .map(decode_chunk, num_parallel_calls=tf.data.AUTOTUNE)
  )
  try:
    offset = 0
    for chunk in ds.as_numpy_iterator():
      images[offset : offset + len(chunk)] = chunk
      offset += len(chunk)
  except (tf.errors.OpError, ValueError) as e:
    raise datasets.DataError(
        f'could not decode the JPEGs in {tar_path} ({datasets.one_line(e)});'
        f' every member must be a {height}x{width} RGB JPEG, copy the file'
        ' again'
    ) from e
  return images


def _read_cache(path: str,
                cache_key: np.ndarray) -> dict[str, np.ndarray] | None:
  """The cached arrays, or None if absent, stale or unreadable."""
  if not os.path.isfile(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      if not np.array_equal(data['key'], cache_key):
        logging.info('Ignoring stale cache %s.', path)
        return None
      return {'image': data['image'], 'label': data['label']}
  except Exception as e:  # pylint: disable=broad-exception-caught
    # A truncated or foreign file only costs a re-decode.
    logging.warning(
        'Ignoring unreadable cache %s: %s', path, datasets.one_line(e))
    return None


def _write_cache(
    path: str, cache_key: np.ndarray, arrays: Mapping[str, np.ndarray]
) -> None:
  """Writes the cache; failure to write is only logged."""
  try:
    # Atomic, so concurrent readers (other hosts on a shared disk) see either
    # no cache or a complete one.
    with atomic_file.open_for_write(path, binary=True) as f:
      # Uncompressed: loading is the point, and it reads at disk speed.
      np.savez(f, key=cache_key, image=arrays['image'], label=arrays['label'])
    logging.info('Cached the decoded split in %s.', path)
  except OSError as e:
    logging.warning('Could not write cache %s: %s', path, datasets.one_line(e))
