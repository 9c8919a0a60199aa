"""The paper's qualitative figures from a trained SGAN.

* `fixed_condition_grid` (paper Fig. 4c / 5): each row holds one generated
  representation ĥ_1 (every z_i above the pixel level fixed per row), the
  columns vary z_0 only, so the spread within a row is what the pixel-level
  noise controls.
* `interpolation_grid`: each row walks linearly from one z_i to another
  (default z_1) with every other noise fixed.
* `nearest_neighbours_grid` (paper Fig. 4b): each sample beside its nearest
  training images by pixels and by E's fc3 features, to show the samples are
  not copies.

The first two return (images, rows) for `sampling.image_grid`. Noise comes
from `sampling.sample_noise`, which gives sample index n the same z's under
the same key in every figure; the figures index it differently (a
fixed-condition row r takes the z_i above the pixel level of index r, its
cells the z_0 of the grid's cell indices), so only the fixed-condition
grid's z_0 coincide with those of the class-conditional grid.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sgan_jax import models as models_lib
from sgan_jax import sampling
from sgan_jax import state as state_lib

DecodeFn = Callable[..., jax.Array]


def _row_labels(rows: int, num_classes: int) -> np.ndarray:
  return (np.arange(rows) % num_classes).astype(np.int32)


def _decode(decode_fn: DecodeFn, st: state_lib.SGANState,
            labels: np.ndarray, zs: Sequence[jax.Array]) -> np.ndarray:
  images = decode_fn(st, jnp.asarray(labels), tuple(zs))
  return np.asarray(sampling.to_uint8(images))


def fixed_condition_inputs(models: models_lib.Models, key: jax.Array,
                           rows: int, cols: int
                           ) -> tuple[np.ndarray, list[jax.Array]]:
  """(labels, zs) of `fixed_condition_grid`: z_0 differs in every cell, the
  noise of every stack above it is the row's."""
  labels = np.repeat(_row_labels(rows, models.num_classes), cols)
  row_noise = sampling.sample_noise(models, key, jnp.arange(rows))
  cell_noise = sampling.sample_noise(models, key, jnp.arange(rows * cols))
  zs = [cell_noise[0]] + [jnp.repeat(z, cols, axis=0) for z in row_noise[1:]]
  return labels, zs


def fixed_condition_grid(decode_fn: DecodeFn, st: state_lib.SGANState,
                         models: models_lib.Models, key: jax.Array,
                         rows: int = 10, cols: int = 10) -> np.ndarray:
  """Rows of samples sharing their ĥ_1, columns of different z_0.

  Args:
    decode_fn: `sampling.make_decode_fn(models)`, ideally jitted.
    st: the trained state.
    models: its module definitions.
    key: the sampling key.
    rows: number of rows; row r is conditioned on class r mod K.
    cols: samples per row.

  Returns:
    (rows * cols, H, W, C) uint8 images, row-major.
  """
  return _decode(decode_fn, st,
                 *fixed_condition_inputs(models, key, rows, cols))


def interpolation_inputs(models: models_lib.Models, key: jax.Array,
                         rows: int, steps: int, stack: int
                         ) -> tuple[np.ndarray, list[jax.Array]]:
  """(labels, zs) of `interpolation_grid`; see there."""
  if not 0 <= stack < models.num_stacks:
    raise ValueError(f'cannot interpolate z_{stack}: the model has stacks '
                     f'0..{models.num_stacks - 1}')
  if steps < 2:
    raise ValueError(f'an interpolation needs at least 2 steps, got {steps}')
  labels = np.repeat(_row_labels(rows, models.num_classes), steps)
  start = sampling.sample_noise(models, key, jnp.arange(rows))
  end = sampling.sample_noise(models, key, jnp.arange(rows, 2 * rows))
  alpha = jnp.tile(jnp.linspace(0.0, 1.0, steps), rows)[:, None]
  zs = [jnp.repeat(z, steps, axis=0) for z in start]
  zs[stack] = ((1.0 - alpha) * zs[stack]
               + alpha * jnp.repeat(end[stack], steps, axis=0))
  return labels, zs


def interpolation_grid(decode_fn: DecodeFn, st: state_lib.SGANState,
                       models: models_lib.Models, key: jax.Array,
                       rows: int = 10, steps: int = 10,
                       stack: int = 1) -> np.ndarray:
  """Rows that interpolate z_`stack` linearly, all other noise fixed.

  Args:
    decode_fn: `sampling.make_decode_fn(models)`, ideally jitted.
    st: the trained state.
    models: its module definitions.
    key: the sampling key.
    rows: number of rows; row r is conditioned on class r mod K.
    steps: columns, from the row's first z (column 0) to its second (last).
    stack: whose noise is interpolated (1: the feature-level z_1; 0 the
      pixel level).

  Returns:
    (rows * steps, H, W, C) uint8 images, row-major.

  Raises:
    ValueError: `stack` is not a stack of the model, or steps < 2.
  """
  return _decode(decode_fn, st,
                 *interpolation_inputs(models, key, rows, steps, stack))


def nearest_neighbours(queries: np.ndarray, references: np.ndarray,
                       k: int) -> np.ndarray:
  """Indices (Q, k) of the k nearest references (L2) of each query.

  Args:
    queries: (Q, ...) features or images.
    references: (R, ...) of the same trailing shape, R >= k.
    k: neighbours per query.

  Returns:
    int indices into `references`, nearest first.
  """
  q = np.asarray(queries, np.float32).reshape(len(queries), -1)
  r = np.asarray(references, np.float32).reshape(len(references), -1)
  if not 1 <= k <= len(r):
    raise ValueError(f'need 1 <= k <= {len(r)} references, got k={k}')
  # |q - r|^2 up to the per-query constant |q|^2.
  d2 = np.einsum('ij,ij->i', r, r)[None, :] - 2.0 * q @ r.T
  part = np.argpartition(d2, k - 1, axis=1)[:, :k]
  order = np.take_along_axis(d2, part, axis=1).argsort(axis=1)
  return np.take_along_axis(part, order, axis=1)


def nearest_neighbours_grid(samples: np.ndarray, sample_features: np.ndarray,
                            train_images: np.ndarray,
                            train_features: np.ndarray,
                            k: int = 5) -> tuple[np.ndarray, int]:
  """Each sample, its k pixel-space and k feature-space training neighbours.

  Args:
    samples: (S, H, W, C) uint8 samples, one per row.
    sample_features: (S, F) their encoder features.
    train_images: (R, H, W, C) uint8 training images.
    train_features: (R, F) their encoder features.
    k: neighbours of each kind.

  Returns:
    (tiles, columns): (S * (2k + 3), H, W, C) uint8 tiles, row-major, laid
    out as [sample | blank | k by pixels | blank | k by features]; blank
    tiles are white separators.
  """
  by_pixels = nearest_neighbours(samples, train_images, k)
  by_features = nearest_neighbours(sample_features, train_features, k)
  blank = np.full((1,) + samples.shape[1:], 255, np.uint8)
  rows = [np.concatenate([samples[i:i + 1], blank, train_images[by_pixels[i]],
                          blank, train_images[by_features[i]]])
          for i in range(len(samples))]
  return np.concatenate(rows), 2 * k + 3
