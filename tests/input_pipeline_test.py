"""Tests for sgan_jax.input_pipeline, tfds_source and cifar10_jpeg.

The real-data tests read the offline copies in `shared/data` next to the
checkout (see shared/data/PROVENANCE.md) and are skipped where it is absent.
MNIST is built with tfds once per test run (conftest's `mnist_tfds_dir`).
"""

import os
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import helpers
from sgan_jax import cifar10_jpeg
from sgan_jax import datasets
from sgan_jax import input_pipeline
from sgan_jax import tfds_source

MNIST_DIR = helpers.MNIST_DIR
CIFAR10_DIR = helpers.CIFAR10_DIR

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                      5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

requires_cifar10 = pytest.mark.skipif(
    not os.path.isfile(os.path.join(CIFAR10_DIR, 'cifar10_jpeg_test.tar')),
    reason=f'offline CIFAR-10 JPEG tars not found in {CIFAR10_DIR}',
)


def _config(name, data_dir=None, manual_dir=None, max_examples=None):
  return ml_collections.ConfigDict(
      dict(
          name=name,
          data_dir=None if data_dir is None else str(data_dir),
          manual_dir=None if manual_dir is None else str(manual_dir),
          max_examples=max_examples,
      )
  )


def _check_arrays(arrays, info, num_examples, image_shape):
  assert set(arrays) == {'image', 'label'}
  assert arrays['image'].shape == (num_examples, *image_shape)
  assert arrays['image'].dtype == np.uint8
  assert arrays['label'].shape == (num_examples,)
  assert arrays['label'].dtype == np.int32
  assert 0 <= arrays['label'].min() and arrays['label'].max() < 10
  assert info.num_examples == num_examples
  assert info.image_shape == image_shape
  assert info.num_classes == 10


# ----------------------------------------------------------------------------
# Unsupported names and splits.


def test_unknown_dataset_raises():
  with pytest.raises(datasets.DataError, match="'imagenet'"):
    input_pipeline.load_split(_config('imagenet'), 'train')


def test_unknown_split_raises():
  with pytest.raises(datasets.DataError, match='validation'):
    input_pipeline.load_split(_config('mnist'), 'validation')


# ----------------------------------------------------------------------------
# tfds under mock_data (no files, no network).


@pytest.mark.parametrize(
    'name,shape',
    [('mnist', (28, 28, 1)), ('svhn_cropped', (32, 32, 3)),
     ('cifar10', (32, 32, 3))],
)
def test_mock_data(name, shape, tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    arrays, info = input_pipeline.load_split(
        _config(name, data_dir=tmp_path), 'train'
    )
    _check_arrays(arrays, info, 12, shape)
    assert info.name == name
    assert 'tfds' in info.source
    # max_examples is honoured even though mock_data ignores split slices.
    arrays, info = input_pipeline.load_split(
        _config(name, data_dir=tmp_path, max_examples=5), 'test'
    )
    _check_arrays(arrays, info, 5, shape)


def test_offline_download_fails_fast(tmp_path, monkeypatch):
  # Simulates a machine without network on any machine: tfds alone would
  # retry for minutes before giving up.
  monkeypatch.setattr(
      tfds_source, '_probe', lambda host, port: 'gaierror: no network'
  )
  monkeypatch.setattr(tfds_source.urllib.request, 'getproxies', dict)
  start = time.perf_counter()
  with pytest.raises(datasets.DataError) as excinfo:
    input_pipeline.load_split(
        _config('svhn_cropped', data_dir=tmp_path), 'train'
    )
  assert time.perf_counter() - start < 10
  message = str(excinfo.value)
  assert '\n' not in message
  assert 'svhn_cropped' in message and 'data_dir' in message


# ----------------------------------------------------------------------------
# Real MNIST from the official archives.


def test_mnist_manual_dir(mnist_tfds_dir):
  config = _config('mnist', data_dir=mnist_tfds_dir, manual_dir=MNIST_DIR)
  train, info = input_pipeline.load_split(config, 'train')
  _check_arrays(train, info, 60000, (28, 28, 1))
  assert info.source == f'tfds (manual_dir={MNIST_DIR})'
  assert np.bincount(train['label']).tolist() == MNIST_TRAIN_COUNTS

  test, info = input_pipeline.load_split(config, 'test')
  _check_arrays(test, info, 10000, (28, 28, 1))
  assert np.bincount(test['label']).tolist() == MNIST_TEST_COUNTS

  config.max_examples = 100
  first, info = input_pipeline.load_split(config, 'train')
  _check_arrays(first, info, 100, (28, 28, 1))
  np.testing.assert_array_equal(first['image'], train['image'][:100])
  np.testing.assert_array_equal(first['label'], train['label'][:100])


def test_mnist_missing_manual_dir_raises(tmp_path):
  missing = tmp_path / 'no_such_folder'
  with pytest.raises(datasets.DataError) as excinfo:
    input_pipeline.load_split(
        _config('mnist', data_dir=tmp_path / 'tfds', manual_dir=missing),
        'train',
    )
  assert str(missing) in str(excinfo.value)
  assert 'train-images-idx3-ubyte.gz' in str(excinfo.value)


def test_mnist_manual_dir_without_archives_raises(tmp_path):
  (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(b'')
  with pytest.raises(datasets.DataError) as excinfo:
    input_pipeline.load_split(
        _config('mnist', data_dir=tmp_path / 'tfds', manual_dir=tmp_path),
        'test',
    )
  message = str(excinfo.value)
  assert str(tmp_path) in message
  assert 't10k-images-idx3-ubyte.gz' in message
  assert 'train-images-idx3-ubyte.gz,' not in message  # It is present.


# ----------------------------------------------------------------------------
# CIFAR-10 from the JPEG tars.


@requires_cifar10
def test_cifar10_jpeg_max_examples(tmp_path):
  arrays, info = input_pipeline.load_split(
      _config('cifar10', data_dir=tmp_path, manual_dir=CIFAR10_DIR,
              max_examples=200),
      'train',
  )
  _check_arrays(arrays, info, 200, (32, 32, 3))
  assert np.bincount(arrays['label'], minlength=10).tolist() == [20] * 10
  assert 'JPEG' in info.source and 'not the original pixels' in info.source
  # Only the full split is cached.
  assert not (tmp_path / 'cifar10_jpeg').exists()

  # Example i is image i // 10 of class i % 10; check the labels and pixels
  # against the lossless copy of those originals.
  with np.load(
      os.path.join(CIFAR10_DIR, 'cifar10_lossless_subset.npz')
  ) as lossless:
    # Each NpzFile lookup decompresses the array again: look up once.
    names, labels, images = (
        lossless['jpeg_names'], lossless['labels'], lossless['images']
    )
  index = {name: i for i, name in enumerate(names)}
  for i in range(200):
    label = i % 10
    assert arrays['label'][i] == label
    j = index[f'{cifar10_jpeg.CLASSES[label]}/{i // 10:04d}.jpg']
    assert labels[j] == label
    mse = np.mean((arrays['image'][i].astype(np.float64) - images[j]) ** 2)
    assert 10 * np.log10(255**2 / mse) > 20  # JPEG q75: ~30 dB on average.


@requires_cifar10
def test_cifar10_jpeg_full_split_is_cached(tmp_path):
  config = _config('cifar10', data_dir=tmp_path, manual_dir=CIFAR10_DIR)
  arrays, info = input_pipeline.load_split(config, 'test')
  _check_arrays(arrays, info, 10000, (32, 32, 3))
  assert np.bincount(arrays['label']).tolist() == [1000] * 10
  cache = tmp_path / 'cifar10_jpeg' / 'test.npz'
  assert cache.is_file()

  cached, cached_info = input_pipeline.load_split(config, 'test')
  assert 'cached' in cached_info.source and 'JPEG' in cached_info.source
  np.testing.assert_array_equal(cached['image'], arrays['image'])
  np.testing.assert_array_equal(cached['label'], arrays['label'])
  # Decoded or cached, the same examples: a run may resume on either.
  assert (datasets.fingerprint(cached)
          == datasets.fingerprint(arrays))
  # The first examples cycle through the classes; max_examples is a prefix.
  assert arrays['label'][:20].tolist() == list(range(10)) * 2
  first, _ = input_pipeline.load_split(
      _config('cifar10', data_dir=tmp_path, manual_dir=CIFAR10_DIR,
              max_examples=30),
      'test',
  )
  np.testing.assert_array_equal(first['image'], arrays['image'][:30])


def test_cifar10_missing_tar_raises(tmp_path):
  with pytest.raises(datasets.DataError) as excinfo:
    input_pipeline.load_split(
        _config('cifar10', data_dir=tmp_path, manual_dir=tmp_path), 'train'
    )
  assert str(tmp_path) in str(excinfo.value)
  assert 'cifar10_jpeg_train.tar' in str(excinfo.value)


def test_cifar10_cache_stays_local_for_a_bucket_data_dir(monkeypatch):
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)
  path = cifar10_jpeg.cache_path('gs://bucket/tfds', 'train')
  assert '://' not in path and 'gs:' not in path
  assert path == os.path.join(os.path.expanduser('~'), 'tensorflow_datasets',
                              'cifar10_jpeg', 'train.npz')
  monkeypatch.setenv('TFDS_DATA_DIR', '/data/tfds')
  assert cifar10_jpeg.cache_path('gs://bucket/tfds', 'test') == (
      '/data/tfds/cifar10_jpeg/test.npz')
