"""The FID InceptionV3 (TF graph 2015-12-05) in Flax, for real IS / FID.

Published Inception Scores and FIDs are computed with one particular network:
the InceptionV3 graph `inception-2015-12-05` that the original IS and FID code
loads. pytorch-fid ported its weights to PyTorch
(`pt_inception-2015-12-05-6726825d.pth`, state-dict names of torchvision's
`Inception3`) and patched torchvision's blocks where the TF graph differs:
the average pools of the A, C and first E blocks do not count padding, and
the last E block max-pools. `InceptionV3` below is that network, written from
those facts, with the same module names, so a state dict maps onto it one to
one (`variables_from_state_dict`).

Weights: users with network access download pytorch-fid's file and convert it
once (torch needed only for that, `pip install -e '.[inception_check]'`):

  python -m sgan_jax.convert_inception --pth=pt_inception-2015-12-05-6726825d.pth \
      --out=inception_fid.npz

and pass `--inception_weights=inception_fid.npz` to `sgan_jax.evaluate`. The
`.npz` holds the state dict's float32 arrays under their torch names.

Preprocessing matches pytorch-fid: uint8 -> [0, 1], grey images repeated to
RGB, bilinear resize to 299 x 299 (half-pixel centres, no antialiasing, as
`F.interpolate(..., align_corners=False)`), then 2x - 1. Outputs: pool3
features (N, 2048) for FID, and for IS the softmax over the 1008 classes of
the *unbiased* logits pool3 @ W, as the original IS code computes them (it
takes `softmax/logits/MatMul`'s weight and never adds the bias).

`tests/inception_test.py` checks this network against pytorch-fid's own on
random weights (run when torch is installed); no pretrained weights exist on
the development machine, so agreement with the published 2015-12-05 numbers
rests on pytorch-fid's port.
"""

from collections.abc import Callable, Mapping
import functools
import os
import time

from absl import logging
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SIZE = 299
POOL_FEATURES = 2048
NUM_CLASSES = 1008
_BN_EPSILON = 1e-3  # torchvision's BasicConv2d


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm (running statistics) -> ReLU."""
  features: int
  kernel: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, self.strides,
                padding=[(p, p) for p in self.padding], use_bias=False,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPSILON,
                     name='bn')(x)
    return nn.relu(x)


# The factorised 1xn / nx1 convolutions of the C and E blocks.
_ROW_7 = dict(kernel=(1, 7), padding=(0, 3))
_COL_7 = dict(kernel=(7, 1), padding=(3, 0))
_ROW_3 = dict(kernel=(1, 3), padding=(0, 1))
_COL_3 = dict(kernel=(3, 1), padding=(1, 0))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # TF's average pool divides by the number of real (unpadded) pixels.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), (2, 2), 'VALID')


class InceptionA(nn.Module):
  """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv(64, (1, 1), name='branch1x1')(x)
    b5 = BasicConv(48, (1, 1), name='branch5x5_1')(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv(self.pool_features, (1, 1),
                   name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35 -> 17 reduction."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(384, (3, 3), (2, 2), name='branch3x3')(x)
    bd = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv(96, (3, 3), (2, 2), name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    row, col = _ROW_7, _COL_7
    b1 = BasicConv(192, (1, 1), name='branch1x1')(x)
    b7 = BasicConv(c7, (1, 1), name='branch7x7_1')(x)
    b7 = BasicConv(c7, **row, name='branch7x7_2')(b7)
    b7 = BasicConv(192, **col, name='branch7x7_3')(b7)
    bd = BasicConv(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = BasicConv(c7, **col, name='branch7x7dbl_2')(bd)
    bd = BasicConv(c7, **row, name='branch7x7dbl_3')(bd)
    bd = BasicConv(c7, **col, name='branch7x7dbl_4')(bd)
    bd = BasicConv(192, **row, name='branch7x7dbl_5')(bd)
    bp = BasicConv(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17 -> 8 reduction."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(192, (1, 1), name='branch3x3_1')(x)
    b3 = BasicConv(320, (3, 3), (2, 2), name='branch3x3_2')(b3)
    b7 = BasicConv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv(192, (3, 3), (2, 2), name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """The 8x8 block; `max_pool` marks the graph's last one (Mixed_7c)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    row, col = _ROW_3, _COL_3
    b1 = BasicConv(320, (1, 1), name='branch1x1')(x)
    b3 = BasicConv(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([BasicConv(384, **row, name='branch3x3_2a')(b3),
                          BasicConv(384, **col, name='branch3x3_2b')(b3)],
                         axis=-1)
    bd = BasicConv(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([BasicConv(384, **row, name='branch3x3dbl_3a')(bd),
                          BasicConv(384, **col, name='branch3x3dbl_3b')(bd)],
                         axis=-1)
    if self.max_pool:
      # The 2015-12-05 graph max-pools here (pytorch-fid's FIDInceptionE_2).
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = BasicConv(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """Preprocessed images (N, H, W, 3) in [-1, 1] -> (pool3, biased logits)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = BasicConv(32, (3, 3), (2, 2), name='Conv2d_1a_3x3')(x)
    x = BasicConv(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = BasicConv(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                     ('Mixed_6e', 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(name='Mixed_7b')(x)
    x = InceptionE(max_pool=True, name='Mixed_7c')(x)
    pool = jnp.mean(x, axis=(1, 2))
    return pool, nn.Dense(NUM_CLASSES, name='fc')(pool)


def preprocess(images: jax.Array, size: int = IMAGE_SIZE) -> jax.Array:
  """uint8 (N, H, W, 1 or 3) -> float32 (N, size, size, 3) in [-1, 1]."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError('Inception needs (N, H, W, 1 or 3) images, got shape '
                     f'{images.shape}')
  x = images.astype(jnp.float32) / 255.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  # antialias=False: F.interpolate(bilinear, align_corners=False) semantics
  # also when a large image is shrunk.
  x = jax.image.resize(x, (x.shape[0], size, size, 3), 'bilinear',
                       antialias=False)
  return 2.0 * x - 1.0


def features_and_probs(variables, images: jax.Array,
                       size: int = IMAGE_SIZE) -> tuple[jax.Array, jax.Array]:
  """(pool3 features, IS softmax of the unbiased logits) of uint8 images.

  Args:
    variables: `InceptionV3` variables (`variables_from_state_dict`).
    images: uint8 (N, H, W, 1 or 3).
    size: the side images are resized to; 299 for comparable numbers (smaller
      only in tests, >= 75).

  Returns:
    (pool (N, 2048), probs (N, 1008)).
  """
  pool, _ = InceptionV3().apply(variables, preprocess(images, size))
  kernel = variables['params']['fc']['kernel']
  return pool, jax.nn.softmax(pool @ kernel, axis=-1)


# ---------------------------------------------------------------------------
# torch state dict <-> Flax variables.
# ---------------------------------------------------------------------------


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """torch state-dict name -> shape, for every array the network needs."""
  return {name: shape for name, (_, shape) in _layout().items()}


_FLAX_TO_TORCH_LEAF = {('params', 'kernel'): 'weight',
                       ('params', 'bias'): 'bias',
                       ('params', 'scale'): 'weight',
                       ('batch_stats', 'mean'): 'running_mean',
                       ('batch_stats', 'var'): 'running_var'}


def _torch_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:  # HWIO -> OIHW
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(shape[::-1])  # Dense (in, out) -> (out, in); 1-D unchanged


def _flax_layout(array: np.ndarray) -> np.ndarray:
  """The inverse of `_torch_layout` on an array."""
  return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T


@functools.cache
def _layout() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """torch name -> (Flax variables path, torch shape)."""
  # Tracing the network costs about a second; every load needs the table.
  shapes = jax.eval_shape(
      InceptionV3().init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32))
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    keys = tuple(k.key for k in path)
    collection, modules, last = keys[0], keys[1:-1], keys[-1]
    name = '.'.join(modules + (_FLAX_TO_TORCH_LEAF[(collection, last)],))
    out[name] = (keys, _torch_layout(leaf.shape))
  return out


def variables_from_state_dict(arrays: Mapping[str, np.ndarray]):
  """pytorch-fid's state dict (name -> array) -> `InceptionV3` variables.

  Args:
    arrays: torch names (`Mixed_5b.branch1x1.conv.weight`, ...) to numpy
      arrays in torch layout (OIHW convs, (out, in) fc). `num_batches_tracked`
      entries are ignored.

  Returns:
    {'params': ..., 'batch_stats': ...} for `InceptionV3().apply`.

  Raises:
    ValueError: names missing or unexpected, or a shape that does not match,
      listing the first few.
  """
  wanted = expected_shapes()
  given = {k: v for k, v in arrays.items()
           if not k.endswith('num_batches_tracked')}
  missing = sorted(set(wanted) - set(given))
  unexpected = sorted(set(given) - set(wanted))
  wrong = sorted(k for k in set(wanted) & set(given)
                 if tuple(np.shape(given[k])) != wanted[k])
  if missing or unexpected or wrong:
    def few(names):
      return ', '.join(names[:3]) + (' ...' if len(names) > 3 else '')
    parts = [f'{len(missing)} missing ({few(missing)})' if missing else '',
             f'{len(unexpected)} unexpected ({few(unexpected)})'
             if unexpected else '',
             f'{len(wrong)} with the wrong shape ({few(wrong)})'
             if wrong else '']
    raise ValueError('not the FID InceptionV3 state dict '
                     '(pt_inception-2015-12-05): '
                     + '; '.join(p for p in parts if p))
  layout = _layout()
  return traverse_util.unflatten_dict({
      layout[name][0]: jnp.asarray(_flax_layout(np.asarray(a, np.float32)))
      for name, a in given.items()})


def load_variables(path: str):
  """`InceptionV3` variables from a converted `.npz` (see module docstring).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a readable .npz, or not this network's arrays.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--inception_weights: {path} not found')
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise ValueError(f'--inception_weights: {path} is not a readable .npz '
                     f'of arrays ({type(e).__name__})') from e
  try:
    return variables_from_state_dict(arrays)
  except ValueError as e:
    raise ValueError(f'--inception_weights: {path}: {e}; convert '
                     'pytorch-fid\'s pt_inception-2015-12-05-6726825d.pth '
                     'with python -m sgan_jax.convert_inception') from e


def make_feature_fn(variables, batch_size: int = 100, size: int | None = None
                    ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Host uint8 images -> numpy (pool3, probs), `batch_size` per call.

  Args:
    variables: `InceptionV3` variables.
    batch_size: images per compiled call: activations at 299 x 299 are about
      40 MB per image, so this bounds memory whatever N the caller passes.
    size: resize target; default `IMAGE_SIZE` (299, for real scores).

  Returns:
    An `evaluation.FeatureFn`.
  """
  size = IMAGE_SIZE if size is None else size
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  compiled = jax.jit(functools.partial(features_and_probs, size=size))

  def feature_fn(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pools, probs = [], []
    began = time.perf_counter()
    for start in range(0, len(images), batch_size):
      if start and start % (10 * batch_size) == 0:
        # Minutes per 10k images on a CPU: say how far it got.
        logging.info('InceptionV3: %d / %d images, %.1f images/s', start,
                     len(images), start / (time.perf_counter() - began))
      chunk = images[start:start + batch_size]
      pad = batch_size - len(chunk)
      if pad:  # one shape, one compile: pad the last chunk
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                                chunk.dtype)])
      pool, prob = jax.device_get(compiled(variables, chunk))
      pools.append(pool[:batch_size - pad])
      probs.append(prob[:batch_size - pad])
    return np.concatenate(pools), np.concatenate(probs)

  return feature_fn
