"""Step-indexed batches of host arrays, gathered on a background thread.

The batch of a step is a pure function of `(seed, step)` (`BatchSampler`):
epoch `step // steps_per_epoch` is a fresh permutation drawn from
`np.random.default_rng([seed, epoch])`, and the step picks its slice of it.
Resuming after preemption therefore needs only the step number from the
checkpoint, never an iterator state. `iterate_batches` gathers the batches on
a daemon thread so the trainer does not wait on numpy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import dataclasses
import queue
import threading
from typing import Any

import numpy as np

from sgan_jax import datasets


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
      datasets.DataError: empty or inconsistent arrays.
      ValueError: a bad batch size, seed or process layout.
    """
    if not arrays:
      raise datasets.DataError(
          'BatchSampler needs at least one array, got none')
    sizes = {key: len(value) for key, value in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise datasets.DataError(f'BatchSampler arrays differ in length: {sizes}')
    num_examples = next(iter(sizes.values()))
    if num_examples == 0:
      raise datasets.DataError('BatchSampler got empty arrays (0 examples)')
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
