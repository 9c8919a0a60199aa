"""The data mesh: device order and where each batch row lands."""

import types

import jax
import numpy as np

from sgan_jax import sharding


def test_devices_are_grouped_by_process_whatever_the_listed_order():
  # A platform that lists two hosts' devices interleaved.
  listed = [types.SimpleNamespace(process_index=p, id=i)
            for i, p in enumerate([1, 0, 1, 0])]
  ordered = sharding.process_major(listed)
  assert [(d.process_index, d.id) for d in ordered] == [
      (0, 1), (0, 3), (1, 0), (1, 2)]


def test_batch_rows_land_on_the_devices_in_mesh_order():
  mesh = sharding.make_mesh()
  devices = list(mesh.devices.flat)
  assert devices == sorted(jax.devices(), key=lambda d: d.id)
  n = len(devices)
  rows = np.arange(4 * n, dtype=np.int32)
  batch = sharding.shard_batch({'label': rows}, mesh)
  for shard in batch['label'].addressable_shards:
    k = devices.index(shard.device)
    np.testing.assert_array_equal(np.asarray(shard.data),
                                  rows[4 * k:4 * (k + 1)])
