"""The paper-figure inputs (which noise is shared) and nearest neighbours."""

import jax
import numpy as np
import pytest

import helpers
from sgan_jax import figures
from sgan_jax import sampling


@pytest.fixture(scope='module')
def tiny():
  return helpers.build(helpers.load_config('mnist'))


def test_fixed_condition_rows_share_every_noise_but_z0(tiny):
  models, _ = tiny
  rows, cols = 4, 3
  labels, zs = figures.fixed_condition_inputs(models, jax.random.key(0),
                                              rows, cols)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(rows), cols))
  z0, z1 = (np.asarray(z).reshape(rows, cols, -1) for z in zs)
  # z_1 (hence ĥ_1) is the row's; z_0 differs between every two cells.
  np.testing.assert_array_equal(z1, np.repeat(z1[:, :1], cols, axis=1))
  assert len({tuple(v) for v in z0.reshape(rows * cols, -1)}) == rows * cols
  assert not np.array_equal(z1[0, 0], z1[1, 0])


def test_interpolation_walks_one_noise_linearly(tiny):
  models, _ = tiny
  rows, steps = 3, 5
  key = jax.random.key(1)
  _, zs = figures.interpolation_inputs(models, key, rows, steps, stack=1)
  z0, z1 = (np.asarray(z).reshape(rows, steps, -1) for z in zs)
  start = np.asarray(sampling.sample_noise(models, key, np.arange(rows))[1])
  end = np.asarray(sampling.sample_noise(models, key,
                                         np.arange(rows, 2 * rows))[1])
  np.testing.assert_allclose(z1[:, 0], start, rtol=1e-6)
  np.testing.assert_allclose(z1[:, -1], end, rtol=1e-6)
  np.testing.assert_allclose(z1[:, 2], (start + end) / 2, rtol=1e-5)
  np.testing.assert_array_equal(z0, np.repeat(z0[:, :1], steps, axis=1))
  with pytest.raises(ValueError, match='z_2'):
    figures.interpolation_inputs(models, key, rows, steps, stack=2)
  with pytest.raises(ValueError, match='2 steps'):
    figures.interpolation_inputs(models, key, rows, 1, stack=1)


def test_figure_grids_decode_to_images(tiny):
  models, st = tiny
  decode = jax.jit(sampling.make_decode_fn(models))
  key = jax.random.key(2)
  fixed = figures.fixed_condition_grid(decode, st, models, key, 2, 3)
  interp = figures.interpolation_grid(decode, st, models, key, 2, 3, stack=0)
  for images in (fixed, interp):
    assert images.shape == (6, 28, 28, 1) and images.dtype == np.uint8
  # Column 0 of the z_0 interpolation is the fixed grid's row noise: same
  # ĥ_1 and same z_0, so the same image.
  start = figures._decode(decode, st, np.arange(2),
                          sampling.sample_noise(models, key, np.arange(2)))
  np.testing.assert_array_equal(interp.reshape(2, 3, 28, 28, 1)[:, 0], start)


def test_nearest_neighbours_are_exact():
  r = np.random.default_rng(0)
  refs = r.normal(size=(50, 4, 4, 1)).astype(np.float32)
  queries = refs[[7, 3]] + 1e-3
  idx = figures.nearest_neighbours(queries, refs, k=3)
  assert idx.shape == (2, 3)
  assert idx[:, 0].tolist() == [7, 3]
  for q, row in zip(queries, idx):
    d = ((refs - q) ** 2).reshape(50, -1).sum(1)
    assert row.tolist() == np.argsort(d)[:3].tolist()
  with pytest.raises(ValueError):
    figures.nearest_neighbours(queries, refs, k=51)


def test_neighbours_grid_layout():
  r = np.random.default_rng(1)
  train = r.integers(0, 256, (30, 5, 5, 1), dtype=np.uint8)
  samples = train[[4, 9]]
  tiles, columns = figures.nearest_neighbours_grid(
      samples, samples.reshape(2, -1).astype(np.float32), train,
      train.reshape(30, -1).astype(np.float32), k=2)
  assert columns == 7 and tiles.shape == (14, 5, 5, 1)
  rows = tiles.reshape(2, 7, 5, 5, 1)
  np.testing.assert_array_equal(rows[:, 0], samples)
  # A training image is its own nearest neighbour in both spaces.
  np.testing.assert_array_equal(rows[:, 2], samples)
  np.testing.assert_array_equal(rows[:, 5], samples)
  assert (rows[:, 1] == 255).all() and (rows[:, 4] == 255).all()
