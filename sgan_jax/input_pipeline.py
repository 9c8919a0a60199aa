"""Input pipeline: whole splits in host memory and step-indexed batches.

The datasets SGAN trains on (MNIST, SVHN, CIFAR-10) are small enough to hold
in host memory, so `load_split` reads a whole split once into numpy arrays:
`{'image': uint8 (N, H, W, C), 'label': int32 (N,)}`.

Batches are then a pure function of `(seed, step)` (`BatchSampler`): epoch
`step // steps_per_epoch` is a fresh permutation drawn from
`np.random.default_rng([seed, epoch])`, and the step picks its slice of it.
Resuming after preemption therefore needs only the step number from the
checkpoint, never an iterator state. `iterate_batches` gathers the batches on
a background thread so the trainer does not wait on numpy.

Sources:

* `mnist`: tfds. With `data.manual_dir` set, tfds is built fully offline from
  the four official `.gz` archives in that folder.
* `svhn_cropped`: tfds, which downloads (failing fast when offline), or
  builds from the original `.mat` files in `data.manual_dir`.
* `cifar10`: with `data.manual_dir` set, read from `cifar10_jpeg_train.tar` /
  `cifar10_jpeg_test.tar` (a quality-75 JPEG re-encoding of CIFAR-10, NOT the
  original pixels); otherwise tfds.

TensorFlow is only used for tfds and JPEG decoding and is kept off any GPU, so
that JAX owns the accelerator memory.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
import dataclasses
import hashlib
import os
import queue
import socket
import tarfile
import threading
import time
from typing import Any
import urllib.parse
import urllib.request
import uuid

from absl import logging
import numpy as np

try:
  import tensorflow as tf
  import tensorflow_datasets as tfds
except ImportError:
  # A JAX-only environment (e.g. a GPU image without TF) can still train from
  # prepared arrays (`<manual_dir>/{train,test}.npz`); tfds sources then fail
  # with a DataError saying so.
  tf = tfds = None
else:
  # TF would otherwise grab (all of) the GPU memory on first use, which
  # belongs to JAX. RuntimeError means TF initialised its devices before this
  # import; it is then too late to change them, and not ours to fail on.
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass
  # Progress bars would flood the training log with carriage returns.
  tfds.disable_progress_bar()

# Prepared arrays in data.manual_dir: '<split>.npz' holding `image` uint8
# (N, H, W, C) and `label` (N,), read with no TensorFlow at all.
NPZ_SPLIT_FILE = '{split}.npz'


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
_DATASETS: dict[str, tuple[int, tuple[int, int, int]]] = {
    'mnist': (10, (28, 28, 1)),
    'cifar10': (10, (32, 32, 3)),
    'svhn_cropped': (10, (32, 32, 3)),
}
SUPPORTED_DATASETS = tuple(_DATASETS)
_SPLITS = ('train', 'test')

# The files tfds' DownloadManager looks for in `manual_dir` (the basenames of
# the URLs in tfds' `url_checksums/mnist.txt`); their sha256 is still checked.
MNIST_FILES = (
    'train-images-idx3-ubyte.gz',
    'train-labels-idx1-ubyte.gz',
    't10k-images-idx3-ubyte.gz',
    't10k-labels-idx1-ubyte.gz',
)

# CIFAR-10 JPEG tars: members are `<class>/NNNN.jpg`; label = index here.
CIFAR10_CLASSES = (
    'airplane', 'automobile', 'bird', 'cat', 'deer',
    'dog', 'frog', 'horse', 'ship', 'truck',
)
CIFAR10_JPEG_SOURCE = (
    'cifar10 JPEG tars (lossy q75 re-encoding, not the original pixels)'
)
# Bump when the decoded content or layout of the .npz cache changes.
_CIFAR10_CACHE_VERSION = 1
# Images per tf.data element when decoding; large enough to amortise the
# per-element overhead, small enough to spread over the cores.
_DECODE_CHUNK = 1000

# How long the reachability probe may take per host. A machine without
# network fails DNS at once; a firewall that drops packets needs the timeout.
_PROBE_TIMEOUT_S = 5.0


def dataset_info(name: str) -> tuple[int, tuple[int, int, int]]:
  """Returns (num_classes, image_shape) of a dataset without loading it.

  Args:
    name: 'mnist', 'cifar10' or 'svhn_cropped'.

  Returns:
    `(num_classes, (H, W, C))`.

  Raises:
    DataError: for an unsupported name.
  """
  _check_name(name)
  return _DATASETS[name]


def load_split(
    data_config: Any, split: str
) -> tuple[dict[str, np.ndarray], DatasetInfo]:
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
    DataError: unsupported name or split, or a data source that is missing,
      unreachable or unreadable.
  """
  name = data_config.get('name')
  _check_name(name)
  if split not in _SPLITS:
    raise DataError(
        f'unsupported split {split!r} for {name}; use one of {_SPLITS}'
    )
  data_dir = _optional_path(data_config.get('data_dir'))
  manual_dir = _optional_path(data_config.get('manual_dir'))
  max_examples = data_config.get('max_examples')
  if max_examples is not None and (
      isinstance(max_examples, bool)
      or not isinstance(max_examples, (int, np.integer))
      or max_examples < 1
  ):
    raise DataError(
        f'data.max_examples must be a positive int or None, got'
        f' {max_examples!r}'
    )

  start = time.perf_counter()
  npz = {s: os.path.join(manual_dir, NPZ_SPLIT_FILE.format(split=s))
         for s in _SPLITS} if manual_dir is not None else {}
  prepared = [s for s, path in npz.items() if os.path.exists(path)]
  if split in prepared:
    arrays, source = _load_npz(npz[split], max_examples)
  elif prepared:
    # Never train on one source and test on another.
    raise DataError(
        f'{manual_dir} holds prepared arrays for the '
        f'{", ".join(prepared)} split but no '
        f'{os.path.basename(npz[split])}; add it, or remove the .npz files '
        f'to read the original archives')
  elif tf is None:
    raise DataError(
        f'tensorflow/tensorflow-datasets are not installed, so {name} can only'
        f' be read from prepared arrays: put {split}.npz (image uint8 NHWC, '
        'label) in --config.data.manual_dir'
    )
  elif name == 'cifar10' and manual_dir is not None:
    arrays, source = _load_cifar10_jpeg(
        manual_dir, data_dir, split, max_examples
    )
  else:
    arrays, source = _load_tfds(
        name, split, data_dir, manual_dir, max_examples
    )

  num_classes, image_shape = _DATASETS[name]
  images, labels = arrays['image'], arrays['label']
  if images.ndim == 3:  # Tolerate a missing channel axis.
    images = images[..., None]
  if images.shape[1:] != image_shape or len(images) != len(labels):
    raise DataError(
        f'{name} {split} from {source} has images {images.shape} and labels'
        f' {labels.shape}, expected (N, {", ".join(map(str, image_shape))})'
        ' and (N,); the data is corrupt, delete and re-create it'
    )
  if not len(labels):
    raise DataError(f'{name} {split} from {source} is empty')
  arrays = {
      'image': np.ascontiguousarray(images, dtype=np.uint8),
      'label': np.ascontiguousarray(labels, dtype=np.int32),
  }
  info = DatasetInfo(
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


def _load_npz(
    path: str, max_examples: int | None
) -> tuple[dict[str, np.ndarray], str]:
  try:
    with np.load(path, allow_pickle=False) as f:
      images, labels = f['image'], f['label']
  except (OSError, KeyError, ValueError) as e:
    raise DataError(
        f'cannot read {path} ({_one_line(e)}); it must hold `image` and'
        ' `label` arrays'
    ) from e
  if max_examples is not None:
    images, labels = images[:max_examples], labels[:max_examples]
  return {'image': images, 'label': labels}, f'prepared arrays {path}'


def _check_name(name: Any) -> None:
  if name not in _DATASETS:
    raise DataError(
        f'unsupported dataset {name!r}; set data.name to one of'
        f' {", ".join(SUPPORTED_DATASETS)}'
    )


def _optional_path(path: str | None) -> str | None:
  # Command-line overrides give '' for "unset".
  return os.path.expanduser(path) if path else None


def _one_line(error: BaseException, limit: int = 200) -> str:
  """`Type: first line of message`, short enough to embed in a DataError."""
  text = ' '.join(str(error).split())
  if len(text) > limit:
    text = text[: limit - 3] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


# ----------------------------------------------------------------------------
# tfds.


def _download_is_mocked() -> bool:
  """Whether tfds' download_and_prepare was replaced, e.g. by mock_data.

  `tfds.testing.mock_data` turns `download_and_prepare` into a no-op and
  makes `as_dataset` yield random examples, but leaves `is_prepared()`
  False; the network probe must not run then, since nothing is downloaded.
  """
  fn = tfds.core.DatasetBuilder.download_and_prepare
  return getattr(fn, '__module__', None) != (
      'tensorflow_datasets.core.dataset_builder'
  )


def _unreachable_host(urls: list[str]) -> str | None:
  """Returns a description of the first URL host we cannot connect to.

  tfds retries a failed download ten times with exponential backoff (measured
  here: 205 s to give up on svhn_cropped without network), so a machine
  without network is detected up front instead, with one TCP connect per host.

  Args:
    urls: The URLs tfds would download.

  Returns:
    None if every host accepted a connection (or a proxy is configured, which
    a direct connect cannot test), else 'host:port (error)'.
  """
  if urllib.request.getproxies():
    return None
  hosts = set()
  for url in urls:
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname:
      default_port = 443 if parsed.scheme == 'https' else 80
      hosts.add((parsed.hostname, parsed.port or default_port))
  for host, port in sorted(hosts):
    error = _probe(host, port)
    if error is not None:
      return f'{host}:{port} ({error})'
  return None


def _probe(host: str, port: int) -> str | None:
  """Connects once to host:port; returns None on success, else the error."""
  result = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
      result.append(None)
    except OSError as e:
      result.append(_one_line(e))

  # The DNS lookup inside create_connection ignores the timeout, and a
  # resolver that never answers can block for long; a daemon thread bounds
  # the wait and cannot keep the interpreter alive at exit.
  thread = threading.Thread(target=connect, name='probe', daemon=True)
  thread.start()
  thread.join(2 * _PROBE_TIMEOUT_S)
  if not result:
    return f'no answer in {2 * _PROBE_TIMEOUT_S:.0f} s'
  return result[0]


def _offline_hint(name: str) -> str:
  if name == 'mnist':
    return (
        'or set data.manual_dir to a folder with the official MNIST archives'
        f' ({", ".join(MNIST_FILES)})'
    )
  if name == 'cifar10':
    return (
        'or set data.manual_dir to a folder with cifar10_jpeg_train.tar and'
        ' cifar10_jpeg_test.tar'
    )
  return 'or copy a prepared tfds data dir and point data.data_dir at it'


def _load_tfds(
    name: str,
    split: str,
    data_dir: str | None,
    manual_dir: str | None,
    max_examples: int | None,
) -> tuple[dict[str, np.ndarray], str]:
  """Prepares (if needed) and reads a split with tfds."""
  builder = tfds.builder(name, data_dir=data_dir)
  mocked = _download_is_mocked()
  if manual_dir is not None:
    source = f'tfds (manual_dir={manual_dir})'
  else:
    source = 'tfds'
  if mocked:
    source += ' (mocked: random data)'

  if not builder.is_prepared() and not mocked:
    if manual_dir is not None:
      _check_manual_dir(name, manual_dir, _manual_files(name, builder))
      # With the archives in manual_dir the DownloadManager never opens a
      # URL; disabling the GCS lookup makes the whole build offline.
      download_config = tfds.download.DownloadConfig(
          manual_dir=manual_dir, try_download_gcs=False
      )
    else:
      unreachable = _unreachable_host(list(builder.url_infos or {}))
      if unreachable is not None:
        raise DataError(
            f'could not download {name} through tfds (cannot reach'
            f' {unreachable}); on a machine with internet run once to'
            f' populate --config.data.data_dir (now {data_dir or "default"}),'
            f' {_offline_hint(name)}'
        )
      download_config = None
    logging.info('Preparing %s with tfds in %s.', name, builder.data_dir)
    try:
      builder.download_and_prepare(download_config=download_config)
    except Exception as e:  # pylint: disable=broad-exception-caught
      # Anything from network errors to checksum mismatches or a read-only
      # data_dir: all mean the split cannot be read; say which and how.
      if manual_dir is not None:
        raise DataError(
            f'could not prepare {name} from manual_dir={manual_dir} into'
            f' {builder.data_dir} ({_one_line(e)}); check the archives are'
            ' the official ones and data.data_dir is writable'
        ) from e
      raise DataError(
          f'could not download {name} through tfds ({_one_line(e)}); on a'
          ' machine with internet run once to populate'
          f' --config.data.data_dir (now {data_dir or "default"}),'
          f' {_offline_hint(name)}'
      ) from e

  try:
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        # The split is read once, so tfds' in-memory cache would only cost
        # memory (and warn when `take` stops it early).
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    # `take` rather than a split slice ('train[:N]'): mock_data ignores
    # slices. Batching instead of `batch_size=-1`, which aborts the process
    # under mock_data (std::length_error in TF).
    if max_examples is not None:
      ds = ds.take(max_examples)
    ds = ds.map(lambda ex: {'image': ex['image'], 'label': ex['label']})
    chunks = list(tfds.as_numpy(ds.batch(8192)))
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise DataError(
        f'could not read {name}/{split} from {builder.data_dir}'
        f' ({_one_line(e)}); delete that folder to have it prepared again'
    ) from e
  if not chunks:
    raise DataError(f'{name}/{split} in {builder.data_dir} is empty')
  arrays = {
      key: np.concatenate([chunk[key] for chunk in chunks])
      for key in ('image', 'label')
  }
  return arrays, source


def _manual_files(name: str, builder: tfds.core.DatasetBuilder) -> list[str]:
  """The files tfds looks for in manual_dir: the basenames of its URLs."""
  if name == 'mnist':
    return list(MNIST_FILES)
  return sorted({
      os.path.basename(urllib.parse.urlsplit(url).path)
      for url in builder.url_infos or {}
  })


def _check_manual_dir(name: str, manual_dir: str, files: list[str]) -> None:
  """Raises DataError unless `manual_dir` holds all of `files`."""
  if not os.path.isdir(manual_dir):
    raise DataError(
        f'data.manual_dir={manual_dir} does not exist; point it at a folder'
        f' holding {", ".join(files)}, or unset it to download {name}'
    )
  missing = [
      f for f in files if not os.path.isfile(os.path.join(manual_dir, f))
  ]
  if missing:
    raise DataError(
        f'data.manual_dir={manual_dir} lacks {", ".join(missing)}; copy the'
        f' original {name} files there, or unset it to download {name}'
    )


# ----------------------------------------------------------------------------
# CIFAR-10 from the JPEG tars.


def _cifar10_cache_path(data_dir: str | None, split: str) -> str:
  # Written with `os`: a bucket (gs://...) data_dir would become a local
  # folder named 'gs:', so the decoded cache then stays on the local disk.
  local = [d for d in (data_dir, os.environ.get('TFDS_DATA_DIR'))
           if d and '://' not in d]
  root = local[0] if local else os.path.join('~', 'tensorflow_datasets')
  return os.path.join(
      os.path.expanduser(root), 'cifar10_jpeg', f'{split}.npz'
  )


def _load_cifar10_jpeg(
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
  """
  tar_name = f'cifar10_jpeg_{split}.tar'
  tar_path = os.path.join(manual_dir, tar_name)
  if not os.path.isfile(tar_path):
    what = 'does not exist' if not os.path.isdir(manual_dir) else (
        f'lacks {tar_name}'
    )
    raise DataError(
        f'data.manual_dir={manual_dir} {what}; point it at a folder holding'
        ' cifar10_jpeg_train.tar and cifar10_jpeg_test.tar, or unset it to'
        ' download CIFAR-10 with tfds'
    )
  stat = os.stat(tar_path)
  # The cache is only worth it (and only valid) for the full split; size and
  # mtime detect a replaced tar without hashing 77 MB on every load.
  cache_key = np.array(
      [_CIFAR10_CACHE_VERSION, stat.st_size, stat.st_mtime_ns], np.int64
  )
  cache_path = _cifar10_cache_path(data_dir, split)
  if max_examples is None:
    arrays = _read_cifar10_cache(cache_path, cache_key)
    if arrays is not None:
      return arrays, f'{CIFAR10_JPEG_SOURCE}, cached in {cache_path}'

  start = time.perf_counter()
  try:
    with tarfile.open(tar_path, 'r:') as tar:
      members = _select_cifar10_members(tar, tar_path, max_examples)
      blobs = [tar.extractfile(m).read() for m, _ in members]
  except (tarfile.TarError, OSError) as e:
    raise DataError(
        f'could not read {tar_path} ({_one_line(e)}); copy it again'
    ) from e
  labels = np.array([label for _, label in members], np.int32)
  images = _decode_jpegs(blobs, tar_path)
  logging.info(
      'Decoded %d JPEGs from %s in %.1f s.',
      len(blobs), tar_path, time.perf_counter() - start,
  )
  arrays = {'image': images, 'label': labels}
  if max_examples is None:
    _write_cifar10_cache(cache_path, cache_key, arrays)
  return arrays, f'{CIFAR10_JPEG_SOURCE} from {tar_path}'


def _select_cifar10_members(
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
    if class_name not in CIFAR10_CLASSES or not file_name.endswith('.jpg'):
      raise DataError(
          f'{tar_path} has an unexpected member {member.name!r} (expected'
          ' <class>/NNNN.jpg with class in airplane..truck); copy it again'
      )
    by_class[CIFAR10_CLASSES.index(class_name)].append(member)
  if not by_class:
    raise DataError(f'{tar_path} holds no JPEGs; copy it again')
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
  height, width, channels = _DATASETS['cifar10'][1]

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
    raise DataError(
        f'could not decode the JPEGs in {tar_path} ({_one_line(e)}); every'
        f' member must be a {height}x{width} RGB JPEG, copy the file again'
    ) from e
  return images


def _read_cifar10_cache(
    path: str, cache_key: np.ndarray
) -> dict[str, np.ndarray] | None:
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
    logging.warning('Ignoring unreadable cache %s: %s', path, _one_line(e))
    return None


def _write_cifar10_cache(
    path: str, cache_key: np.ndarray, arrays: Mapping[str, np.ndarray]
) -> None:
  """Writes the cache atomically; failure to write is only logged."""
  tmp_path = f'{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}'
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Uncompressed: loading is the point, and it reads at disk speed.
    with open(tmp_path, 'wb') as f:
      np.savez(f, key=cache_key, image=arrays['image'], label=arrays['label'])
    # Atomic, so concurrent readers (other hosts on a shared disk) see either
    # no cache or a complete one.
    os.replace(tmp_path, path)
    logging.info('Cached the decoded split in %s.', path)
  except OSError as e:
    logging.warning('Could not write cache %s: %s', path, _one_line(e))
    try:
      os.remove(tmp_path)
    except OSError:
      pass


# ----------------------------------------------------------------------------
# Step-indexed batching.


class BatchSampler:
  """Batches that are a pure function of (seed, step).

  Epoch `e = step // steps_per_epoch` visits the examples in the order of
  `np.random.default_rng([seed, e]).permutation(N)`, `global_batch_size` at a
  time, dropping the remainder. Each process takes its contiguous slice of
  the global batch, so the processes together see exactly the global batch.

  Attributes:
    arrays: The arrays batches are gathered from (same leading dimension).
    num_examples: N, their leading dimension.
    global_batch_size: Examples per step over all processes.
    local_batch_size: Examples per step in this process.
    seed: Seed of the permutations.
    process_index: This process's index.
    process_count: Number of processes.
    steps_per_epoch: `N // global_batch_size`.
  """

  def __init__(
      self,
      arrays: Mapping[str, np.ndarray],
      global_batch_size: int,
      seed: int,
      process_index: int = 0,
      process_count: int = 1,
  ):
    """Initialises the sampler.

    Args:
      arrays: Name -> array, all with the same leading dimension N > 0.
      global_batch_size: Examples per step over all processes; a multiple of
        `process_count` and at most N.
      seed: Non-negative seed of the epoch permutations.
      process_index: This process, in [0, process_count).
      process_count: Number of processes sharing each global batch.

    Raises:
      DataError: empty or inconsistent arrays.
      ValueError: a bad batch size, seed or process layout.
    """
    if not arrays:
      raise DataError('BatchSampler needs at least one array, got none')
    sizes = {key: len(value) for key, value in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise DataError(f'BatchSampler arrays differ in length: {sizes}')
    num_examples = next(iter(sizes.values()))
    if num_examples == 0:
      raise DataError('BatchSampler got empty arrays (0 examples)')
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(
          f'process_index={process_index} must be in [0, process_count='
          f'{process_count})'
      )
    if global_batch_size < 1:
      raise ValueError(
          f'global_batch_size={global_batch_size} must be positive'
      )
    if global_batch_size % process_count:
      raise ValueError(
          f'global_batch_size={global_batch_size} is not divisible by'
          f' process_count={process_count}'
      )
    if global_batch_size > num_examples:
      raise ValueError(
          f'global_batch_size={global_batch_size} exceeds the dataset size'
          f' {num_examples}; lower the batch size or raise max_examples'
      )
    if seed < 0:
      raise ValueError(f'seed={seed} must be non-negative')
    self.arrays = dict(arrays)
    self.num_examples = num_examples
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = int(seed)
    self.process_index = process_index
    self.process_count = process_count
    self.steps_per_epoch = num_examples // global_batch_size
    # (epoch, permutation) of the last epoch used: consecutive steps share
    # it. One tuple, so a reader on another thread never sees a torn pair.
    self._cached_permutation: tuple[int, np.ndarray] | None = None

  def _permutation(self, epoch: int) -> np.ndarray:
    cached = self._cached_permutation
    if cached is not None and cached[0] == epoch:
      return cached[1]
    permutation = np.random.default_rng([self.seed, epoch]).permutation(
        self.num_examples
    )
    # Callers get views of it; read-only keeps them from corrupting it.
    permutation.flags.writeable = False
    self._cached_permutation = (epoch, permutation)
    return permutation

  def global_indices(self, step: int) -> np.ndarray:
    """Returns the example indices of global step `step`.

    Args:
      step: Global step, >= 0.

    Returns:
      Read-only int array of shape (global_batch_size,).
    """
    if step < 0:
      raise ValueError(f'step={step} must be non-negative')
    epoch, position = divmod(int(step), self.steps_per_epoch)
    start = position * self.global_batch_size
    return self._permutation(epoch)[start : start + self.global_batch_size]

  def local_batch(self, step: int) -> dict[str, np.ndarray]:
    """Returns this process's slice of the batch of global step `step`.

    Args:
      step: Global step, >= 0.

    Returns:
      Name -> array with leading dimension `local_batch_size`: rows
      [process_index * B/P, (process_index + 1) * B/P) of the global batch.
    """
    start = self.process_index * self.local_batch_size
    indices = self.global_indices(step)[start : start + self.local_batch_size]
    return {
        key: np.take(value, indices, axis=0)
        for key, value in self.arrays.items()
    }


@dataclasses.dataclass(frozen=True)
class _WorkerError:
  error: BaseException


def _produce(
    sampler: BatchSampler,
    start_step: int,
    end_step: int | None,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
  """Puts (step, batch) into `out` until end_step, an error or `stop`."""
  step = start_step
  while end_step is None or step < end_step:
    try:
      item = (step, sampler.local_batch(step))
    except BaseException as e:  # pylint: disable=broad-exception-caught
      item = _WorkerError(e)
    # Poll `stop` so an abandoned consumer never leaves us blocked on a full
    # queue forever.
    while True:
      if stop.is_set():
        return
      try:
        out.put(item, timeout=0.1)
        break
      except queue.Full:
        pass
    if isinstance(item, _WorkerError):
      return
    step += 1


def iterate_batches(
    sampler: BatchSampler,
    start_step: int,
    num_steps: int | None = None,
    prefetch: int = 2,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """Yields `(step, sampler.local_batch(step))` for consecutive steps.

  A daemon thread assembles the batches `prefetch` steps ahead. An exception
  there is re-raised here, at the step it happened; closing or dropping the
  generator stops the thread.

  Args:
    sampler: Where batches come from.
    start_step: First step (e.g. the restored checkpoint step).
    num_steps: How many steps to yield; None: forever.
    prefetch: Batches assembled ahead; 0 assembles them inline.

  Yields:
    `(step, batch)` for step = start_step, start_step + 1, ...
  """
  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be non-negative')
  if num_steps is not None and num_steps < 0:
    raise ValueError(f'num_steps={num_steps} must be non-negative or None')
  if prefetch < 0:
    raise ValueError(f'prefetch={prefetch} must be non-negative')
  end_step = None if num_steps is None else start_step + num_steps

  if prefetch == 0:
    step = start_step
    while end_step is None or step < end_step:
      yield step, sampler.local_batch(step)
      step += 1
    return

  out = queue.Queue(maxsize=prefetch)
  stop = threading.Event()
  # The thread must not reference this generator, or dropping the generator
  # could not trigger the `finally` below.
  worker = threading.Thread(
      target=_produce,
      args=(sampler, start_step, end_step, out, stop),
      name=f'iterate_batches-{start_step}',
      daemon=True,
  )
  worker.start()
  try:
    step = start_step
    while end_step is None or step < end_step:
      item = _get(out, worker)
      if isinstance(item, _WorkerError):
        raise item.error
      yield item
      step += 1
  finally:
    stop.set()
    # The worker notices `stop` within 0.1 s unless mid-gather; waiting
    # briefly lets it finish cleanly, and it is a daemon either way.
    worker.join(timeout=1.0)


def _get(out: queue.Queue, worker: threading.Thread) -> Any:
  """Takes the next item, failing instead of hanging if the worker died."""
  while True:
    try:
      return out.get(timeout=1.0)
    except queue.Empty:
      if not worker.is_alive():
        try:
          return out.get_nowait()
        except queue.Empty:
          raise RuntimeError(
              'the iterate_batches worker thread exited without a batch'
          ) from None
