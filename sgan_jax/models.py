"""SGAN networks: the encoder E, the generators G_i and discriminators D_i.

Levels: h_0 is the image, h_1 .. h_{N-1} are encoder features and h_N is the
label. Stack i maps (h_{i+1}, z_i) to h_i. Stack 0 works on pixels (conv G and
D); stacks i >= 1 work on feature vectors (MLP G and D). Which encoder layers
are levels is data (`config.model.levels`), so two or three stacks come from
the same code.

Architectures follow the original Theano code (see
shared/reference/sgan_original_code.md): biasless layer -> BN -> ReLU in G,
LeakyReLU(0.2) in D, N(0, 0.02) init, BN momentum 0.9 and epsilon 1e-6. All
(transposed) convolutions go through `layers.Conv` / `layers.ConvTranspose`,
the one place where a faster CPU formulation is chosen.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from sgan_jax import layers

# Encoder levels, bottom-up. 'pool2' is the flattened output of the second
# conv block; 'fc3' the post-ReLU hidden layer; 'logits' the class scores.
ENCODER_LEVELS = ('image', 'pool2', 'fc3', 'logits')

_INIT = nn.initializers.normal(0.02)
BN_MOMENTUM = 0.9
_BN = dict(momentum=BN_MOMENTUM, epsilon=1e-6)


def _lrelu(x):
  return nn.leaky_relu(x, 0.2)


def _even_crop(x: jax.Array) -> jax.Array:
  """x without an odd trailing row and column (the pixels no 2x2 window
  reads)."""
  _, h, w, _ = x.shape
  return x[:, :h - h % 2, :w - w % 2]


def _window_corners(x: jax.Array) -> list[jax.Array]:
  """The four pixels of every 2x2 window, in row-major window order."""
  x = _even_crop(x)
  return [x[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]


def _upsample_2x2(t: jax.Array) -> jax.Array:
  """Each pixel repeated over a 2x2 block (nearest-neighbour upsampling)."""
  n, h, w, c = t.shape
  t = jnp.broadcast_to(t[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return t.reshape(n, 2 * h, 2 * w, c)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 (odd trailing rows/columns dropped).

  The same function and gradient as `nn.max_pool(x, (2, 2), strides=(2, 2))`
  (at ties the first pixel of the window in row-major order takes the whole
  cotangent, as in XLA's select-and-scatter and PyTorch), with a
  hand-written VJP: XLA:CPU runs `reduce_window`'s select-and-scatter
  gradient about 25x slower than the encoder's convolutions, and autodiff of
  a max over a reshape counts the ties of every window (a reduction and a
  division per pixel).

  The forward pass stays a `reduce_window`: XLA does not fuse it into its
  consumers, so the pooled map is written once. As elementwise maxima of
  strided slices, XLA fused the pooling into each consumer and recomputed it
  there (the encoder's conv2 kernel gradient read the 4x larger conv1 output
  through a transpose).
  """
  return lax.reduce_window(
      _even_crop(x), jnp.array(-jnp.inf, x.dtype), lax.max,
      (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, dy):
  """One elementwise pass over the input's pixels: each pixel takes its
  window's cotangent if it is the window's first maximum. (Four per-corner
  maps and an interleaving copy were five XLA:CPU kernels, ~2x slower in
  the MNIST encoder step.)"""
  x, y = residuals
  n, h2, w2, _ = y.shape
  y_up = _upsample_2x2(y)
  a, b, c = [_upsample_2x2(t) for t in _window_corners(x)[:3]]
  # The row-major index of each window's first maximum; y is one of the
  # corners, so the last needs no test.
  first = jnp.where(a == y_up, 0, jnp.where(b == y_up, 1,
                                            jnp.where(c == y_up, 2, 3)))
  shape = (1, 2 * h2, 2 * w2, 1)
  corner = (2 * (lax.broadcasted_iota(jnp.int32, shape, 1) % 2)
            + lax.broadcasted_iota(jnp.int32, shape, 2) % 2)
  dx = jnp.where(first == corner, _upsample_2x2(dy),
                 jnp.zeros((), dy.dtype))
  h, w = x.shape[1:3]
  dx = jnp.pad(dx, ((0, 0), (0, h - 2 * h2), (0, w - 2 * w2), (0, 0)))
  return (dx,)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


class Encoder(nn.Module):
  """The frozen bottom-up classifier E, callable level to level.

  conv(k5, VALID) -> ReLU -> maxpool 2 -> conv -> ReLU -> maxpool 2 ->
  flatten ('pool2') -> dense + ReLU ('fc3') -> dense ('logits'); each
  conv bias -> ReLU -> maxpool runs as maxpool -> bias -> ReLU, the same
  function.

  Attributes:
    conv_features: widths of the two conv layers (MNIST 32/32, CIFAR 64/128).
    hidden: width of fc3 (256 in both original encoders).
    num_classes: number of labels.
    conv_impl: see `layers.resolve_impl`.
    dtype: computation dtype.
  """
  conv_features: Sequence[int] = (32, 32)
  hidden: int = 256
  num_classes: int = 10
  conv_impl: str = 'auto'
  dtype: Any = None

  def setup(self):
    self.convs = [
        layers.Conv(f, 5, padding='VALID', impl=self.conv_impl,
                    dtype=self.dtype, name=f'conv{j + 1}')
        for j, f in enumerate(self.conv_features)
    ]
    self.fc3 = nn.Dense(self.hidden, dtype=self.dtype)
    self.fc4 = nn.Dense(self.num_classes, dtype=self.dtype)

  def _stage(self, level: str, h: jax.Array) -> jax.Array:
    """Maps the level before `level` to `level`."""
    if level == 'pool2':
      for conv in self.convs:
        # relu(pool(.)) = pool(relu(.)) in value and gradient (ReLU is
        # monotone; both pass nothing where the window max is <= 0), and the
        # ReLU then runs on a quarter of the pixels. The bias is added after
        # the pooling for the same reason: a per-channel constant commutes
        # with a max (MNIST encoder step: x1.085, in-process A/B).
        h = nn.relu(conv(h, before_bias=max_pool_2x2))
      return h.reshape(h.shape[0], -1)
    if level == 'fc3':
      return nn.relu(self.fc3(h))
    return self.fc4(h)

  def __call__(self, h: jax.Array, start: str = 'image',
               stop: str = 'logits') -> jax.Array:
    """Runs E from level `start` up to level `stop`.

    Args:
      h: a representation at level `start` (an NHWC image for 'image').
      start: name of the input level.
      stop: name of the output level, above `start`.

    Returns:
      The representation at level `stop`.
    """
    i, j = ENCODER_LEVELS.index(start), ENCODER_LEVELS.index(stop)
    if j <= i:
      raise ValueError(f'encoder level {stop!r} is not above {start!r}')
    for level in ENCODER_LEVELS[i + 1:j + 1]:
      h = self._stage(level, h)
    return h


class _NoiseEmbedding(nn.Module):
  """Dense -> BN -> ReLU layers on one input (z or the condition)."""
  widths: Sequence[int]
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    for w in self.widths:
      x = nn.Dense(w, use_bias=False, kernel_init=_INIT, dtype=self.dtype)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype,
                               **_BN)(x))
    return x


class FeatureGenerator(nn.Module):
  """G_i for a feature level: (h_{i+1}, z_i) -> h_i (an MLP).

  Attributes:
    out_dim: width of h_i.
    hidden: widths of the Dense-BN-ReLU layers after the concatenation.
    z_embed: Dense-BN-ReLU widths applied to z alone before concatenating
      (CIFAR G1: (256,); MNIST G1: none).
    cond_embed: the same for the condition (CIFAR G1: (512,)).
    dtype: computation dtype.
  """
  out_dim: int
  hidden: Sequence[int] = (512, 512)
  z_embed: Sequence[int] = ()
  cond_embed: Sequence[int] = ()
  dtype: Any = None

  @nn.compact
  def __call__(self, cond: jax.Array, z: jax.Array, train: bool) -> jax.Array:
    z = _NoiseEmbedding(self.z_embed, self.dtype, name='z_embed')(z, train)
    cond = _NoiseEmbedding(self.cond_embed, self.dtype,
                           name='cond_embed')(cond, train)
    h = _NoiseEmbedding(self.hidden, self.dtype, name='trunk')(
        jnp.concatenate([z, cond.astype(z.dtype)], axis=-1), train)
    # Post-ReLU output, like the encoder features it imitates.
    return nn.relu(nn.Dense(self.out_dim, kernel_init=_INIT,
                            dtype=self.dtype, name='out')(h))


class ImageGenerator(nn.Module):
  """G_0: (h_1, z_0) -> image in [0, 1].

  z_0 -> Dense-BN-ReLU embedding, concatenated with h_1 -> Dense-BN-ReLU to
  `base_shape` -> 5x5 transposed convs (BN, ReLU) -> a last transposed conv
  with bias to the image channels -> sigmoid.

  Attributes:
    image_shape: (H, W, C) of the output.
    base_shape: (h, w, c) of the first feature map.
    deconvs: (features, stride, padding) of each transposed conv; the last
      entry's features are ignored (the image's C is used).
    z_embed: widths of the z embedding (MNIST (128,), CIFAR (128, 128)).
    conv_impl: see `layers.resolve_impl`.
    dtype: computation dtype.
  """
  image_shape: Sequence[int]
  base_shape: Sequence[int] = (4, 4, 128)
  deconvs: Sequence[tuple[int, int, str]] = (
      (128, 2, 'SAME'), (64, 1, 'VALID'), (64, 2, 'SAME'), (1, 1, 'VALID'))
  z_embed: Sequence[int] = (128,)
  conv_impl: str = 'auto'
  dtype: Any = None

  @nn.compact
  def __call__(self, cond: jax.Array, z: jax.Array, train: bool) -> jax.Array:
    z = _NoiseEmbedding(self.z_embed, self.dtype, name='z_embed')(z, train)
    h = jnp.concatenate([cond.astype(z.dtype), z], axis=-1)
    h = _NoiseEmbedding((math.prod(self.base_shape),),
                        self.dtype, name='project')(h, train)
    h = h.reshape((h.shape[0], *self.base_shape))
    for j, (features, stride, padding) in enumerate(self.deconvs):
      last = j == len(self.deconvs) - 1
      h = layers.ConvTranspose(
          self.image_shape[-1] if last else features, 5, strides=stride,
          padding=padding, use_bias=last, kernel_init=_INIT,
          impl=self.conv_impl, dtype=self.dtype, name=f'deconv{j + 1}')(h)
      if not last:
        h = nn.relu(nn.BatchNorm(use_running_average=not train,
                                 dtype=self.dtype, **_BN)(h))
    if tuple(h.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'generator makes {h.shape[1:]}, '
                       f'data has {tuple(self.image_shape)}')
    return nn.sigmoid(h.astype(jnp.float32))


class _Heads(nn.Module):
  """D's adversarial head and Q head (z reconstruction) on a shared trunk."""
  num_logits: int
  z_dim: int
  q_activation: str
  adv_pool: str
  dtype: Any = None

  @nn.compact
  def __call__(self, trunk):
    q_in = trunk.reshape(trunk.shape[0], -1)
    if trunk.ndim == 4 and self.adv_pool == 'mean':
      adv_in = jnp.mean(trunk, axis=(1, 2))
    else:
      adv_in = q_in
    logits = nn.Dense(self.num_logits, kernel_init=_INIT, dtype=self.dtype,
                      name='adv')(adv_in)
    z_pred = nn.Dense(self.z_dim, kernel_init=_INIT, dtype=self.dtype,
                      name='q')(q_in)
    if self.q_activation == 'sigmoid':
      z_pred = nn.sigmoid(z_pred)
    return logits.astype(jnp.float32), z_pred.astype(jnp.float32)


class FeatureDiscriminator(nn.Module):
  """D_i + Q_i for a feature level.

  Attributes:
    num_logits: 1 (binary D) or the number of classes (K-class D).
    z_dim: width of the Q head's output.
    hidden: widths of the Dense-LeakyReLU trunk layers.
    batch_norm: per trunk layer, whether it is biasless Dense -> BN.
    input_noise: std of Gaussian noise added to the input in training.
    hidden_noise: std of Gaussian noise after each trunk layer (original
      joint CIFAR D1: 0.2).
    q_activation: 'sigmoid' (z ~ U[0,1), MNIST) or 'linear' (CIFAR).
    dtype: computation dtype.
  """
  num_logits: int
  z_dim: int
  hidden: Sequence[int] = (256, 256)
  batch_norm: Sequence[bool] = (False, False)
  input_noise: float = 0.0
  hidden_noise: float = 0.0
  q_activation: str = 'sigmoid'
  dtype: Any = None

  @nn.compact
  def __call__(self, h: jax.Array, train: bool = True):
    h = _gaussian_noise(self, h, self.input_noise, train)
    for w, bn in zip(self.hidden, self.batch_norm):
      h = nn.Dense(w, use_bias=not bn, kernel_init=_INIT, dtype=self.dtype)(h)
      if bn:
        h = nn.BatchNorm(use_running_average=not train, dtype=self.dtype,
                         **_BN)(h)
      h = _gaussian_noise(self, _lrelu(h), self.hidden_noise, train)
    return _Heads(self.num_logits, self.z_dim, self.q_activation, 'flatten',
                  self.dtype, name='heads')(h)


class ImageDiscriminator(nn.Module):
  """D_0 + Q_0 on images.

  Attributes:
    num_logits: 1 (binary D) or the number of classes (K-class D).
    z_dim: width of the Q head's output.
    convs: (features, kernel, stride, padding, batch_norm, dropout_after)
      of each conv layer, all followed by LeakyReLU.
    nin: widths of 1x1 conv layers (with bias, LeakyReLU) after the convs.
    dense: widths of Dense-LeakyReLU layers on the flattened map.
    input_noise: std of Gaussian noise added to the input in training.
    dropout: rate of the dropout layers marked in `convs`.
    adv_pool: 'flatten' or 'mean' (global mean pool before the adversarial
      head, as the original CIFAR D0) when the trunk ends in a feature map.
    q_activation: 'sigmoid' or 'linear'.
    conv_impl: see `layers.resolve_impl`.
    dtype: computation dtype.
  """
  num_logits: int
  z_dim: int
  convs: Sequence[tuple[int, int, int, Any, bool, bool]] = (
      (32, 5, 2, 2, False, False), (64, 5, 2, 2, False, False),
      (128, 5, 2, 2, False, False))
  nin: Sequence[int] = ()
  dense: Sequence[int] = (256,)
  input_noise: float = 0.0
  dropout: float = 0.0
  adv_pool: str = 'flatten'
  q_activation: str = 'sigmoid'
  conv_impl: str = 'auto'
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True):
    h = _gaussian_noise(self, x, self.input_noise, train)
    for features, kernel, stride, padding, bn, drop in self.convs:
      h = layers.Conv(features, kernel, strides=stride, padding=padding,
                      use_bias=not bn, kernel_init=_INIT, impl=self.conv_impl,
                      dtype=self.dtype)(h)
      if bn:
        h = nn.BatchNorm(use_running_average=not train, dtype=self.dtype,
                         **_BN)(h)
      h = _lrelu(h)
      if drop and self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    for w in self.nin:
      h = _lrelu(layers.Conv(w, 1, padding='VALID', kernel_init=_INIT,
                             impl=self.conv_impl, dtype=self.dtype)(h))
    if self.dense:
      h = h.reshape(h.shape[0], -1)
      for w in self.dense:
        h = _lrelu(nn.Dense(w, kernel_init=_INIT, dtype=self.dtype)(h))
    return _Heads(self.num_logits, self.z_dim, self.q_activation,
                  self.adv_pool, self.dtype, name='heads')(h)


def _gaussian_noise(module: nn.Module, x: jax.Array, std: float,
                    train: bool) -> jax.Array:
  if not train or std <= 0:
    return x
  key = module.make_rng('noise')
  return x + std * jax.random.normal(key, x.shape, x.dtype)


@dataclasses.dataclass(frozen=True)
class StackModels:
  """The static parts of stack i (module definitions and level names).

  Attributes:
    index: i; 0 is the pixel level.
    generator: G_i, called as G(cond, z, train) -> h_i.
    discriminator: D_i, called as D(h_i, train) -> (adv logits, z_pred).
    joint_discriminator: D_i with the joint phase's regularisation (the
      original raises dropout and adds noise there); same parameters.
    z_dim: width of z_i.
    level: encoder level name of h_i ('image' for i = 0).
    cond_level: encoder level name of h_{i+1} ('logits' for the top stack,
      where the condition is the one-hot label).
  """
  index: int
  generator: nn.Module
  discriminator: nn.Module
  joint_discriminator: nn.Module
  z_dim: int
  level: str
  cond_level: str

  @property
  def conditional_kind(self) -> str:
    return 'xent' if self.cond_level == 'logits' else 'mse'


@dataclasses.dataclass(frozen=True)
class Models:
  """Every module definition of an SGAN, built once from the config."""
  encoder: Encoder
  stacks: tuple[StackModels, ...]
  image_shape: tuple[int, int, int]
  num_classes: int
  level_dims: dict[str, int]

  @property
  def num_stacks(self) -> int:
    return len(self.stacks)


def encoder_level_dims(image_shape: Sequence[int], conv_features: Sequence[int],
                       hidden: int, num_classes: int) -> dict[str, int]:
  """Widths of the flat encoder levels for an input image shape."""
  h, w = image_shape[0], image_shape[1]
  for _ in conv_features:
    h, w = (h - 4) // 2, (w - 4) // 2
  return {'pool2': h * w * conv_features[-1], 'fc3': hidden,
          'logits': num_classes}
