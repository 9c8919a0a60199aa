"""Tests for sgan_jax.batching."""

import itertools
import threading
import time

import numpy as np
import pytest

from sgan_jax import batching
from sgan_jax import datasets


def _arrays(n=50):
  return {
      'image': np.arange(n * 2, dtype=np.float32).reshape(n, 2),
      'label': np.arange(n, dtype=np.int32),
  }


# ----------------------------------------------------------------------------
# BatchSampler.


def test_sampler_is_a_function_of_seed_and_step():
  a = batching.BatchSampler(_arrays(), global_batch_size=8, seed=3)
  b = batching.BatchSampler(_arrays(), global_batch_size=8, seed=3)
  c = batching.BatchSampler(_arrays(), global_batch_size=8, seed=4)
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
  sampler = batching.BatchSampler(_arrays(48), 8, seed=0)
  for epoch in range(3):
    steps = range(epoch * 6, (epoch + 1) * 6)
    seen = np.concatenate([sampler.global_indices(s) for s in steps])
    np.testing.assert_array_equal(np.sort(seen), np.arange(48))
    labels = np.concatenate(
        [sampler.local_batch(s)['label'] for s in steps]
    )
    np.testing.assert_array_equal(np.sort(labels), np.arange(48))


def test_sampler_drops_remainder():
  sampler = batching.BatchSampler(_arrays(50), 8, seed=0)
  seen = np.concatenate([sampler.global_indices(s) for s in range(6)])
  assert len(np.unique(seen)) == 48


def test_sampler_process_slices_concatenate_to_global_batch():
  arrays = _arrays()
  samplers = [
      batching.BatchSampler(arrays, 12, seed=7, process_index=p,
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
    batching.BatchSampler(_arrays(), **kwargs)


def test_sampler_rejects_bad_arrays():
  with pytest.raises(datasets.DataError, match='empty'):
    batching.BatchSampler(_arrays(0), 1, seed=0)
  with pytest.raises(datasets.DataError, match='differ'):
    batching.BatchSampler(
        {'image': np.zeros((4, 2)), 'label': np.zeros(5)}, 2, seed=0
    )
  with pytest.raises(datasets.DataError):
    batching.BatchSampler({}, 2, seed=0)


# ----------------------------------------------------------------------------
# iterate_batches.


def _iterator_threads():
  return [t for t in threading.enumerate()
          if t.name.startswith('iterate_batches')]


@pytest.mark.parametrize('prefetch', [0, 1, 3])
def test_iterate_batches_matches_local_batch(prefetch):
  sampler = batching.BatchSampler(_arrays(), 8, seed=1,
                                        process_index=1, process_count=2)
  got = list(batching.iterate_batches(sampler, start_step=4,
                                            num_steps=10, prefetch=prefetch))
  assert [step for step, _ in got] == list(range(4, 14))
  for step, batch in got:
    expected = sampler.local_batch(step)
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key])


def test_iterate_batches_forever():
  sampler = batching.BatchSampler(_arrays(), 8, seed=1)
  batches = batching.iterate_batches(sampler, start_step=0)
  steps = [step for step, _ in itertools.islice(batches, 25)]
  assert steps == list(range(25))
  batches.close()


class _FailingSampler(batching.BatchSampler):

  def local_batch(self, step):
    if step == 3:
      raise KeyError('bad step 3')
    return super().local_batch(step)


def test_iterate_batches_reraises_worker_error():
  sampler = _FailingSampler(_arrays(), 8, seed=1)
  steps = []
  with pytest.raises(KeyError, match='bad step 3'):
    for step, _ in batching.iterate_batches(sampler, 0, num_steps=10):
      steps.append(step)
  assert steps == [0, 1, 2]


def test_abandoned_iterator_stops_its_thread():
  sampler = batching.BatchSampler(_arrays(), 8, seed=1)
  before = len(_iterator_threads())
  batches = batching.iterate_batches(sampler, start_step=0)
  next(batches)
  assert len(_iterator_threads()) == before + 1
  del batches  # Never exhausted: the worker is blocked on a full queue.
  deadline = time.monotonic() + 5
  while len(_iterator_threads()) > before and time.monotonic() < deadline:
    time.sleep(0.01)
  assert len(_iterator_threads()) == before
