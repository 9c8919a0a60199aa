"""Top-down sampling: y -> G_{N-1} -> ... -> G_0 -> image, and image grids.

Sampling uses the EMA generator params (equal to the live params when
`optim.ema_decay` is 0) and fixed BatchNorm statistics, so each sample depends
only on its label, its index and the key, never on what else is in the batch.
The statistics are G's training running averages, or, with
`log.bn_calibration_num` > 0, recomputed for the EMA params
(`BatchStatsCalibrator`): the running averages belong to the live params,
which the EMA params are not.
"""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from sgan_jax import atomic_file
from sgan_jax import models as models_lib
from sgan_jax import rng
from sgan_jax import sharding as sharding_lib
from sgan_jax import state as state_lib


def make_decode_fn(models: models_lib.Models):
  """Returns decode(state, labels, zs) -> images in [0, 1].

  Top-down generation with given noise: onehot(labels) -> G_{N-1} -> ... ->
  G_0, each G_i with its z_i = zs[i] (index 0 = pixel level).

  Args of the returned function:
    state: an SGANState.
    labels: (B,) int class of each sample.
    zs: a sequence with one (B, z_dim_i) array per stack.
  """
  def decode(st: state_lib.SGANState, labels, zs):
    h = jax.nn.one_hot(labels, models.num_classes)
    for sm in reversed(models.stacks):
      stack = st.stacks[sm.index]
      h = sm.generator.apply(stack.g.variables(stack.g_ema), h, zs[sm.index],
                             train=False)
    return h

  return decode


def sample_noise(models: models_lib.Models, key: jax.Array,
                 indices: jax.Array) -> tuple[jax.Array, ...]:
  """z_i of each sample index for every stack: U[0, 1) drawn from
  fold_in(stack i's Z stream, index), so a sample's noise depends on its
  index and the key only, never on the batching."""
  def noise(i, z_dim):
    k = rng.stream(rng.stack_key(key, i), rng.Z)
    return jax.vmap(lambda n: jax.random.uniform(jax.random.fold_in(k, n),
                                                 (z_dim,)))(indices)
  return tuple(noise(sm.index, sm.z_dim) for sm in models.stacks)


def make_sample_fn(models: models_lib.Models):
  """Returns sample(state, labels, indices, key) -> images in [0, 1].

  Args of the returned function:
    state: an SGANState.
    labels: (B,) int class of each sample.
    indices: (B,) int index of each sample; its noise is
      `sample_noise(models, key, indices)`.
    key: the sampling key (e.g. `rng.eval_key(root)`).
  """
  decode = make_decode_fn(models)

  def sample(st: state_lib.SGANState, labels, indices, key):
    return decode(st, labels, sample_noise(models, key, indices))

  return sample


def make_calibrate_fn(models: models_lib.Models, num: int):
  """Returns calibrate(state, key) -> state for sampling ("precise BN").

  Every G_i's `batch_stats` are replaced by the batch statistics of its EMA
  params on `num` class-balanced samples generated top-down (G_i fed G_{i+1}'s
  output, computed with the statistics just found). Params are untouched.
  The result is for sampling only: training continues from the original.

  Args:
    models: the run's module definitions.
    num: samples the statistics are computed over.
  """
  keep = models_lib.BN_MOMENTUM

  def calibrate(st: state_lib.SGANState, key: jax.Array):
    indices = jnp.arange(num, dtype=jnp.int32)
    zs = sample_noise(models, key, indices)
    h = jax.nn.one_hot(indices % models.num_classes, models.num_classes)
    stacks = list(st.stacks)
    for sm in reversed(models.stacks):
      stack = stacks[sm.index]
      # From zero running averages one train-mode update leaves
      # (1 - momentum) * batch statistic: divide it back out.
      zeros = jax.tree.map(jnp.zeros_like, stack.g.batch_stats)
      h, updates = sm.generator.apply(
          {'params': stack.g_ema, 'batch_stats': zeros}, h, zs[sm.index],
          train=True, mutable=['batch_stats'])
      stats = jax.tree.map(lambda v: v / (1.0 - keep),
                           updates['batch_stats'])
      stacks[sm.index] = stack.replace(g=stack.g.replace(batch_stats=stats))
    return st.replace(stacks=tuple(stacks))

  return calibrate


class BatchStatsCalibrator:
  """`calibrator(state) -> state` with sampling BN statistics of the EMA G.

  Identity when `config.log.bn_calibration_num` is 0 (or absent, as in runs
  older than the key). Compiled once; the key is fixed by `config.seed`, so
  the same checkpoint always gives the same statistics.

  Args:
    models: the run's module definitions.
    config: the run config.
    mesh: the ('data',) mesh; the state is replicated over it.
  """

  def __init__(self, models: models_lib.Models,
               config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    self.num = int(config.log.get('bn_calibration_num', 0))
    if self.num < 0:
      raise ValueError(f'log.bn_calibration_num must be >= 0, got '
                       f'{self.num}')
    self._key = rng.bn_calibration_key(jax.random.key(config.seed))
    self._fn = None
    if self.num:
      repl = sharding_lib.replicated(mesh)
      self._fn = jax.jit(make_calibrate_fn(models, self.num),
                         in_shardings=(repl, repl), out_shardings=repl)

  def __call__(self, st: state_lib.SGANState) -> state_lib.SGANState:
    return st if self._fn is None else self._fn(st, self._key)


def balanced_labels(num: int, num_classes: int) -> np.ndarray:
  """Labels 0..K-1 repeated: sample n has class n mod K (N/K each)."""
  if num <= 0 or num % num_classes:
    raise ValueError(f'the number of samples must be a positive multiple of '
                     f'the {num_classes} classes, got {num}')
  return (np.arange(num) % num_classes).astype(np.int32)


def generate(sample_fn, st: state_lib.SGANState, labels: np.ndarray,
             key: jax.Array, batch_size: int = 1000,
             sharding: jax.sharding.Sharding | None = None) -> np.ndarray:
  """Samples for every label, `batch_size` at a time; uint8 NHWC on host.

  `sample_fn` should be jitted; the last chunk is padded to `batch_size` so
  only one shape is ever compiled.
  """
  out = []
  for start in range(0, len(labels), batch_size):
    idx = np.arange(start, start + batch_size, dtype=np.int32)
    lab = labels[np.minimum(idx, len(labels) - 1)]
    if sharding is not None:
      idx, lab = jax.device_put((idx, lab), sharding)
    images = sample_fn(st, lab, idx, key)
    out.append(np.asarray(to_uint8(images))[:len(labels) - start])
  return np.concatenate(out, axis=0)


def to_uint8(images01: jax.Array) -> jax.Array:
  return jnp.clip(jnp.round(images01 * 255.0), 0, 255).astype(jnp.uint8)


def grid_labels(num_classes: int, per_class: int) -> np.ndarray:
  """Labels for a grid with one row per class: row-major, class = row."""
  return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def image_grid(images: np.ndarray, rows: int, pad: int = 1) -> np.ndarray:
  """(N, H, W, C) uint8 -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) image,
  row-major."""
  n, h, w, c = images.shape
  cols = -(-n // rows)
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255,
                 np.uint8)
  for k in range(n):
    r, q = divmod(k, cols)
    y, x = pad + r * (h + pad), pad + q * (w + pad)
    grid[y:y + h, x:x + w] = images[k]
  return grid


def save_png(path: str, grid: np.ndarray) -> None:
  # TensorBoard-less users watch samples/ while training writes it.
  with atomic_file.open_for_write(path, binary=True) as f:
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(
        f, format='PNG')
