"""Top-down sampling: y -> G_{N-1} -> ... -> G_0 -> image, and image grids.

Sampling uses the EMA generator params (equal to the live params when
`optim.ema_decay` is 0) and BatchNorm running averages, so each sample depends
only on its label, its index and the key, never on what else is in the batch.
"""


from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sgan_jax import models as models_lib
from sgan_jax import rng
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
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(
        f, format='PNG')
