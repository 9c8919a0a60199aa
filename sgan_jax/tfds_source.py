"""tfds as a data source: MNIST and SVHN, and CIFAR-10 without its tars.

A machine without network is detected up front, with one TCP connect per
download host, instead of after tfds' minutes of retries. With
`data.manual_dir` set, tfds builds from the dataset's original files in it,
fully offline.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

from absl import logging
import numpy as np

from sgan_jax import datasets
from sgan_jax import tensorflow_cpu

# The files tfds' DownloadManager looks for in `manual_dir` (the basenames of
# the URLs in tfds' `url_checksums/mnist.txt`); their sha256 is still checked.
MNIST_FILES = (
    'train-images-idx3-ubyte.gz',
    'train-labels-idx1-ubyte.gz',
    't10k-images-idx3-ubyte.gz',
    't10k-labels-idx1-ubyte.gz',
)

# How long the reachability probe may take per host. A machine without
# network fails DNS at once; a firewall that drops packets needs the timeout.
_PROBE_TIMEOUT_S = 5.0


def _download_is_mocked() -> bool:
  """Whether tfds' download_and_prepare was replaced, e.g. by mock_data.

  `tfds.testing.mock_data` turns `download_and_prepare` into a no-op and
  makes `as_dataset` yield random examples, but leaves `is_prepared()`
  False; the network probe must not run then, since nothing is downloaded.
  """
  fn = tensorflow_cpu.tfds.core.DatasetBuilder.download_and_prepare
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
      result.append(datasets.one_line(e))

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


def load(
    name: str,
    split: str,
    data_dir: str | None,
    manual_dir: str | None,
    max_examples: int | None,
) -> tuple[dict[str, np.ndarray], str]:
  """Prepares (if needed) and reads a split with tfds.

  Args:
    name: The tfds name.
    split: 'train' or 'test'.
    data_dir: tfds data dir (None: tfds' default).
    manual_dir: Folder of the dataset's original files, read only when
      `data_dir` holds no prepared copy yet; the build is then offline.
    max_examples: Keep only the first N examples (None: all).

  Returns:
    (`{'image', 'label'}` as read, source description).

  Raises:
    datasets.DataError: the split cannot be prepared or read, in one line
      that says how to fix it; a machine without network fails in seconds.
  """
  builder = tensorflow_cpu.tfds.builder(name, data_dir=data_dir)
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
      download_config = tensorflow_cpu.tfds.download.DownloadConfig(
          manual_dir=manual_dir, try_download_gcs=False
      )
    else:
      unreachable = _unreachable_host(list(builder.url_infos or {}))
      if unreachable is not None:
        raise datasets.DataError(
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
        raise datasets.DataError(
            f'could not prepare {name} from manual_dir={manual_dir} into'
            f' {builder.data_dir} ({datasets.one_line(e)}); check the archives'
            ' are the official ones and data.data_dir is writable'
        ) from e
      raise datasets.DataError(
          f'could not download {name} through tfds'
          f' ({datasets.one_line(e)}); on a machine with internet run once to'
          f' populate --config.data.data_dir (now {data_dir or "default"}),'
          f' {_offline_hint(name)}'
      ) from e

  try:
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        # The split is read once, so tfds' in-memory cache would only cost
        # memory (and warn when `take` stops it early).
        read_config=tensorflow_cpu.tfds.ReadConfig(try_autocache=False),
    )
    # `take` rather than a split slice ('train[:N]'): mock_data ignores
    # slices. Batching instead of `batch_size=-1`, which aborts the process
    # under mock_data (std::length_error in TF).
    if max_examples is not None:
      ds = ds.take(max_examples)
    ds = ds.map(lambda ex: {'image': ex['image'], 'label': ex['label']})
    chunks = list(tensorflow_cpu.tfds.as_numpy(ds.batch(8192)))
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise datasets.DataError(
        f'could not read {name}/{split} from {builder.data_dir}'
        f' ({datasets.one_line(e)}); delete that folder to have it prepared'
        ' again'
    ) from e
  if not chunks:
    raise datasets.DataError(f'{name}/{split} in {builder.data_dir} is empty')
  arrays = {
      key: np.concatenate([chunk[key] for chunk in chunks])
      for key in ('image', 'label')
  }
  return arrays, source


def _manual_files(
    name: str, builder: tensorflow_cpu.tfds.core.DatasetBuilder
) -> list[str]:
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
    raise datasets.DataError(
        f'data.manual_dir={manual_dir} does not exist; point it at a folder'
        f' holding {", ".join(files)}, or unset it to download {name}'
    )
  missing = [
      f for f in files if not os.path.isfile(os.path.join(manual_dir, f))
  ]
  if missing:
    raise datasets.DataError(
        f'data.manual_dir={manual_dir} lacks {", ".join(missing)}; copy the'
        f' original {name} files there, or unset it to download {name}'
    )
