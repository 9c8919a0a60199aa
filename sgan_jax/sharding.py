"""Data-parallel sharding: one ('data',) mesh over every device.

Parameters and optimizer state are replicated; batches are split along their
first axis. Under `jax.jit` with these shardings XLA inserts the gradient
all-reduce, and BatchNorm statistics over the batch axis are global-batch
statistics: no per-device code, no pmap.
"""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all devices, grouped
  by process, see `process_major`).

  Axis type Auto: only the batch is sharded and GSPMD propagation places
  everything else, so no array needs an explicit sharding annotation.
  """
  devices = process_major(jax.devices()) if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def process_major(devices: list[jax.Device]) -> list[jax.Device]:
  """`devices` ordered by (process, id).

  Process p feeds rows [p B/P, (p+1) B/P) of each global batch
  (`batching.BatchSampler`), and `shard_batch` puts a process's rows
  on its own devices in mesh order: with the mesh grouped by process those
  rows are the global batch's rows in place, as in a one-process run,
  whatever order the platform lists its devices in.
  """
  return sorted(devices, key=lambda d: (d.process_index, d.id))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  """Raises a one-line ValueError unless the batch divides across devices."""
  n = mesh.devices.size
  if global_batch < 1:
    raise ValueError(f'config.data.batch_size must be positive, got '
                     f'{global_batch}')
  if global_batch % n or global_batch % jax.process_count():
    raise ValueError(
        f'config.data.batch_size={global_batch} must be divisible by the '
        f'{n} devices ({jax.process_count()} processes)')


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh
                ) -> dict[str, jax.Array]:
  """Host arrays of this process's slice -> global arrays sharded on 'data'.

  Each process passes its own contiguous slice of the global batch (see
  `batching.BatchSampler.local_batch`).
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def wait_for_all_processes(name: str, timeout_s: int = 3600) -> None:
  """Blocks until every process of the run reaches barrier `name`.

  A barrier of the distributed runtime's coordination service, not a
  collective: the first CPU collective (gloo setting up its context) gives
  up after 30 s, which a process still compiling (another one hit the
  persistent cache) easily exceeds. No-op in a single process.

  Args:
    name: unique per barrier (every process passes the same name).
    timeout_s: how long to wait for the slowest process.
  """
  # orbax's wrapper of the coordination client; a no-op for one process.
  from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
  multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)
