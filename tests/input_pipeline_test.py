"""Tests for sgan_jax.input_pipeline.

The real-data tests read the offline copies in `shared/data` next to the
checkout (see shared/data/PROVENANCE.md) and are skipped where it is absent.
MNIST is prepared with tfds once per module (about 30 s on 2 cores).
"""

import itertools
import os
import threading
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sgan_jax import input_pipeline

_SHARED_DATA = os.path.join(
    os.path.dirname(__file__), '..', '..', 'shared', 'data'
)
MNIST_DIR = os.path.abspath(os.path.join(_SHARED_DATA, 'mnist'))
CIFAR10_DIR = os.path.abspath(os.path.join(_SHARED_DATA, 'cifar10'))

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                      5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

requires_mnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(MNIST_DIR, 'train-images-idx3-ubyte.gz')),
    reason=f'offline MNIST archives not found in {MNIST_DIR}',
)
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
# Dataset metadata and errors.


@pytest.mark.parametrize(
    'name,shape',
    [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3)),
     ('svhn_cropped', (32, 32, 3))],
)
def test_dataset_info(name, shape):
  assert input_pipeline.dataset_info(name) == (10, shape)


def test_unknown_dataset_raises():
  with pytest.raises(input_pipeline.DataError, match='mnist'):
    input_pipeline.dataset_info('imagenet')
  with pytest.raises(input_pipeline.DataError, match="'imagenet'"):
    input_pipeline.load_split(_config('imagenet'), 'train')


def test_unknown_split_raises():
  with pytest.raises(input_pipeline.DataError, match='validation'):
    input_pipeline.load_split(_config('mnist'), 'validation')


def test_tensorflow_sees_no_gpu():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  assert not tf.config.get_visible_devices('GPU')


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
      input_pipeline, '_probe', lambda host, port: 'gaierror: no network'
  )
  monkeypatch.setattr(input_pipeline.urllib.request, 'getproxies', dict)
  start = time.perf_counter()
  with pytest.raises(input_pipeline.DataError) as excinfo:
    input_pipeline.load_split(
        _config('svhn_cropped', data_dir=tmp_path), 'train'
    )
  assert time.perf_counter() - start < 10
  message = str(excinfo.value)
  assert '\n' not in message
  assert 'svhn_cropped' in message and 'data_dir' in message


# ----------------------------------------------------------------------------
# Real MNIST from the official archives.


@pytest.fixture(scope='module')
def mnist_data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@requires_mnist
def test_mnist_manual_dir(mnist_data_dir):
  config = _config('mnist', data_dir=mnist_data_dir, manual_dir=MNIST_DIR)
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
  with pytest.raises(input_pipeline.DataError) as excinfo:
    input_pipeline.load_split(
        _config('mnist', data_dir=tmp_path / 'tfds', manual_dir=missing),
        'train',
    )
  assert str(missing) in str(excinfo.value)
  assert 'train-images-idx3-ubyte.gz' in str(excinfo.value)


def test_mnist_manual_dir_without_archives_raises(tmp_path):
  (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(b'')
  with pytest.raises(input_pipeline.DataError) as excinfo:
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
    j = index[f'{input_pipeline.CIFAR10_CLASSES[label]}/{i // 10:04d}.jpg']
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
  assert (input_pipeline.fingerprint(cached)
          == input_pipeline.fingerprint(arrays))
  # The first examples cycle through the classes; max_examples is a prefix.
  assert arrays['label'][:20].tolist() == list(range(10)) * 2
  first, _ = input_pipeline.load_split(
      _config('cifar10', data_dir=tmp_path, manual_dir=CIFAR10_DIR,
              max_examples=30),
      'test',
  )
  np.testing.assert_array_equal(first['image'], arrays['image'][:30])


def test_cifar10_missing_tar_raises(tmp_path):
  with pytest.raises(input_pipeline.DataError) as excinfo:
    input_pipeline.load_split(
        _config('cifar10', data_dir=tmp_path, manual_dir=tmp_path), 'train'
    )
  assert str(tmp_path) in str(excinfo.value)
  assert 'cifar10_jpeg_train.tar' in str(excinfo.value)


# ----------------------------------------------------------------------------
# BatchSampler.


def _arrays(n=50):
  return {
      'image': np.arange(n * 2, dtype=np.float32).reshape(n, 2),
      'label': np.arange(n, dtype=np.int32),
  }


def test_fingerprint_sees_pixels_labels_and_order():
  rs = np.random.default_rng(0)
  arrays = {'image': rs.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8),
            'label': rs.integers(0, 10, 6).astype(np.int32)}
  base = input_pipeline.fingerprint(arrays)
  assert base == input_pipeline.fingerprint(
      {k: v.copy() for k, v in arrays.items()})
  one_pixel = arrays['image'].copy()
  one_pixel[5, 3, 3, 0] ^= 1
  one_label = arrays['label'].copy()
  one_label[0] = (one_label[0] + 1) % 10
  changed = [dict(arrays, image=one_pixel), dict(arrays, label=one_label),
             {k: v[::-1] for k, v in arrays.items()},
             {k: v[:5] for k, v in arrays.items()}]
  digests = {input_pipeline.fingerprint(a) for a in changed}
  assert base not in digests and len(digests) == len(changed)


def test_sampler_is_a_function_of_seed_and_step():
  a = input_pipeline.BatchSampler(_arrays(), global_batch_size=8, seed=3)
  b = input_pipeline.BatchSampler(_arrays(), global_batch_size=8, seed=3)
  c = input_pipeline.BatchSampler(_arrays(), global_batch_size=8, seed=4)
  assert a.steps_per_epoch == 6
  # Visiting steps in another order (as after a restart) changes nothing.
  for step in [17, 0, 5, 6, 100, 17]:
    np.testing.assert_array_equal(a.global_indices(step),
                                  b.global_indices(step))
  assert not all(
      np.array_equal(a.global_indices(s), c.global_indices(s))
      for s in range(6)
  )
  assert not np.array_equal(a.global_indices(0), a.global_indices(6))
  epoch3 = np.random.default_rng([3, 3]).permutation(50)
  np.testing.assert_array_equal(a.global_indices(19), epoch3[8:16])


def test_sampler_epoch_covers_every_example_once():
  sampler = input_pipeline.BatchSampler(_arrays(48), 8, seed=0)
  for epoch in range(3):
    steps = range(epoch * 6, (epoch + 1) * 6)
    seen = np.concatenate([sampler.global_indices(s) for s in steps])
    np.testing.assert_array_equal(np.sort(seen), np.arange(48))
    labels = np.concatenate(
        [sampler.local_batch(s)['label'] for s in steps]
    )
    np.testing.assert_array_equal(np.sort(labels), np.arange(48))


def test_sampler_drops_remainder():
  sampler = input_pipeline.BatchSampler(_arrays(50), 8, seed=0)
  seen = np.concatenate([sampler.global_indices(s) for s in range(6)])
  assert len(np.unique(seen)) == 48


def test_sampler_process_slices_concatenate_to_global_batch():
  arrays = _arrays()
  samplers = [
      input_pipeline.BatchSampler(arrays, 12, seed=7, process_index=p,
                                  process_count=4)
      for p in range(4)
  ]
  for step in [0, 3, 9]:
    batches = [s.local_batch(step) for s in samplers]
    assert all(b['label'].shape == (3,) for b in batches)
    indices = samplers[0].global_indices(step)
    for key in arrays:
      np.testing.assert_array_equal(
          np.concatenate([b[key] for b in batches]), arrays[key][indices]
      )


@pytest.mark.parametrize(
    'kwargs,match',
    [
        (dict(global_batch_size=10, process_count=4), 'divisible'),
        (dict(global_batch_size=64), 'exceeds the dataset size 50'),
        (dict(global_batch_size=0), 'positive'),
        (dict(global_batch_size=8, process_index=2, process_count=2),
         'process_index'),
        (dict(global_batch_size=8, seed=-1), 'seed'),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, match):
  kwargs = dict(dict(seed=0), **kwargs)
  with pytest.raises(ValueError, match=match):
    input_pipeline.BatchSampler(_arrays(), **kwargs)


def test_sampler_rejects_bad_arrays():
  with pytest.raises(input_pipeline.DataError, match='empty'):
    input_pipeline.BatchSampler(_arrays(0), 1, seed=0)
  with pytest.raises(input_pipeline.DataError, match='differ'):
    input_pipeline.BatchSampler(
        {'image': np.zeros((4, 2)), 'label': np.zeros(5)}, 2, seed=0
    )
  with pytest.raises(input_pipeline.DataError):
    input_pipeline.BatchSampler({}, 2, seed=0)


# ----------------------------------------------------------------------------
# iterate_batches.


def _iterator_threads():
  return [t for t in threading.enumerate()
          if t.name.startswith('iterate_batches')]


@pytest.mark.parametrize('prefetch', [0, 1, 3])
def test_iterate_batches_matches_local_batch(prefetch):
  sampler = input_pipeline.BatchSampler(_arrays(), 8, seed=1,
                                        process_index=1, process_count=2)
  got = list(input_pipeline.iterate_batches(sampler, start_step=4,
                                            num_steps=10, prefetch=prefetch))
  assert [step for step, _ in got] == list(range(4, 14))
  for step, batch in got:
    expected = sampler.local_batch(step)
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key])


def test_iterate_batches_forever():
  sampler = input_pipeline.BatchSampler(_arrays(), 8, seed=1)
  batches = input_pipeline.iterate_batches(sampler, start_step=0)
  steps = [step for step, _ in itertools.islice(batches, 25)]
  assert steps == list(range(25))
  batches.close()


class _FailingSampler(input_pipeline.BatchSampler):

  def local_batch(self, step):
    if step == 3:
      raise KeyError('bad step 3')
    return super().local_batch(step)


def test_iterate_batches_reraises_worker_error():
  sampler = _FailingSampler(_arrays(), 8, seed=1)
  steps = []
  with pytest.raises(KeyError, match='bad step 3'):
    for step, _ in input_pipeline.iterate_batches(sampler, 0, num_steps=10):
      steps.append(step)
  assert steps == [0, 1, 2]


def test_abandoned_iterator_stops_its_thread():
  sampler = input_pipeline.BatchSampler(_arrays(), 8, seed=1)
  before = len(_iterator_threads())
  batches = input_pipeline.iterate_batches(sampler, start_step=0)
  next(batches)
  assert len(_iterator_threads()) == before + 1
  del batches  # Never exhausted: the worker is blocked on a full queue.
  deadline = time.monotonic() + 5
  while len(_iterator_threads()) > before and time.monotonic() < deadline:
    time.sleep(0.01)
  assert len(_iterator_threads()) == before


def test_cifar10_cache_stays_local_for_a_bucket_data_dir(monkeypatch):
  monkeypatch.delenv('TFDS_DATA_DIR', raising=False)
  path = input_pipeline._cifar10_cache_path('gs://bucket/tfds', 'train')
  assert '://' not in path and 'gs:' not in path
  assert path == os.path.join(os.path.expanduser('~'), 'tensorflow_datasets',
                              'cifar10_jpeg', 'train.npz')
  monkeypatch.setenv('TFDS_DATA_DIR', '/data/tfds')
  assert input_pipeline._cifar10_cache_path('gs://bucket/tfds', 'test') == (
      '/data/tfds/cifar10_jpeg/test.npz')
