"""Builds the networks of a run from its config.

Two families follow the original code: 'mnist' (small binary discriminators,
no BN or noise in D) and 'cifar' (conv64/conv128 encoder, embedded G inputs,
the Improved-GAN D0 with input noise and dropout). `model.width` scales every
hidden width, which is how the tiny test presets stay fast. Output widths
(image channels, encoder levels, z) never scale.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections

from sgan_jax import models

ARCHES = ('mnist', 'cifar')
# Encoder levels between the image and the label, bottom-up: one stack per
# level plus one. () is a single GAN G(y, z) -> image (the paper's DCGAN
# baselines).
LEVEL_CHOICES = ((), ('fc3',), ('pool2', 'fc3'))
# Q's output: in [0, 1] like z ~ U[0, 1) (MNIST), or unbounded (CIFAR).
Q_ACTIVATIONS = ('sigmoid', 'linear')


def _scaled(width: float):
  def w(n: int) -> int:
    return max(1, int(round(n * width)))
  return w


def _dtype(name: str):
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f"config.dtype must be 'float32' or 'bfloat16', got "
                     f'{name!r}')
  return jnp.float32 if name == 'float32' else jnp.bfloat16


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a model config `build_models` cannot build.

  Needs no data, so a run calls it before reading any (a bad override then
  fails in a second, not after a dataset download).

  Args:
    config: the run config (reads `model`, `stacks`, `dtype`).
  """
  mc = config.model
  if mc.arch not in ARCHES:
    raise ValueError(f'config.model.arch must be one of {ARCHES}, got '
                     f'{mc.arch!r}')
  if mc.q_activation not in Q_ACTIVATIONS:
    raise ValueError(f'config.model.q_activation must be one of '
                     f'{Q_ACTIVATIONS}, got {mc.q_activation!r}')
  levels = tuple(mc.levels)
  if levels not in LEVEL_CHOICES:
    raise ValueError(f'config.model.levels must be one of {LEVEL_CHOICES} '
                     f'(() is a single conditional GAN on the label), got '
                     f'{levels!r}')
  num_stacks = len(levels) + 1
  if len(config.stacks) != num_stacks:
    raise ValueError(
        f'config.model.levels {levels} gives {num_stacks} stacks but '
        f'config.stacks has {len(config.stacks)} entries; use the presets '
        f'`:single_gan` or `:three_stacks` (config_base.set_levels), which '
        f'build the per-stack settings too')
  for i, sc in enumerate(config.stacks):
    if sc.z_dim <= 0:
      raise ValueError(f'config.stacks[{i}].z_dim must be positive, got '
                       f'{sc.z_dim}')
  _dtype(config.dtype)


def build_models(config: ml_collections.ConfigDict, num_classes: int,
                 image_shape: Sequence[int]) -> models.Models:
  """Module definitions for every network of the run.

  Args:
    config: the run config (reads `model`, `stacks`, `dtype`).
    num_classes: number of labels of the dataset.
    image_shape: (H, W, C) of the dataset's images.

  Returns:
    A `models.Models`.
  """
  check_config(config)
  mc = config.model
  levels = tuple(mc.levels)
  w = _scaled(mc.width)
  dtype = _dtype(config.dtype)
  cifar = mc.arch == 'cifar'
  image_shape = tuple(int(d) for d in image_shape)

  enc_convs = (w(64), w(128)) if cifar else (w(32), w(32))
  encoder = models.Encoder(conv_features=enc_convs, hidden=w(256),
                           num_classes=num_classes, conv_impl=mc.conv_impl,
                           dtype=dtype)
  dims = models.encoder_level_dims(image_shape, enc_convs, w(256), num_classes)
  num_logits = num_classes if mc.d_class_logits else 1
  all_levels = ('image',) + levels + ('logits',)

  stacks = []
  for i, sc in enumerate(config.stacks):
    level, cond_level = all_levels[i], all_levels[i + 1]
    common_d = dict(num_logits=num_logits, z_dim=sc.z_dim,
                    q_activation=mc.q_activation, dtype=dtype)
    if i == 0:
      g = models.ImageGenerator(
          image_shape=image_shape, conv_impl=mc.conv_impl, dtype=dtype,
          **_image_generator(cifar, w, image_shape))
      d_kw = dict(common_d, conv_impl=mc.conv_impl,
                  input_noise=sc.d_input_noise,
                  **_image_discriminator(cifar, w))
      d = models.ImageDiscriminator(dropout=sc.d_dropout, **d_kw)
      d_joint = models.ImageDiscriminator(dropout=sc.d_dropout_joint, **d_kw)
    else:
      g = models.FeatureGenerator(
          out_dim=dims[level], hidden=(w(512), w(512)),
          z_embed=(w(256),) if cifar else (),
          cond_embed=(w(512),) if cifar else (), dtype=dtype)
      d_kw = dict(common_d, input_noise=sc.d_input_noise,
                  hidden=(w(512), w(512)) if cifar else (w(256), w(256)),
                  batch_norm=(False, True) if cifar else (False, False))
      d = models.FeatureDiscriminator(**d_kw)
      d_joint = models.FeatureDiscriminator(
          hidden_noise=sc.d_hidden_noise_joint, **d_kw)
    stacks.append(models.StackModels(
        index=i, generator=g, discriminator=d, joint_discriminator=d_joint,
        z_dim=sc.z_dim, level=level, cond_level=cond_level))
  return models.Models(encoder=encoder, stacks=tuple(stacks),
                       image_shape=image_shape, num_classes=num_classes,
                       level_dims=dims)


def _image_generator(cifar: bool, w, image_shape):
  """G0's layout: 4x4 -> 28 (MNIST) or 5x5 -> 32 (CIFAR) by 5x5 deconvs."""
  if cifar:
    return dict(base_shape=(5, 5, w(256)),
                deconvs=((w(256), 2, 'SAME'), (w(128), 1, 'VALID'),
                         (w(128), 2, 'SAME'), (image_shape[-1], 1, 'VALID')),
                z_embed=(w(128), w(128)))
  return dict(base_shape=(4, 4, w(128)),
              deconvs=((w(128), 2, 'SAME'), (w(64), 1, 'VALID'),
                       (w(64), 2, 'SAME'), (image_shape[-1], 1, 'VALID')),
              z_embed=(w(128),))


def _image_discriminator(cifar: bool, w):
  """D0's trunk: the Improved-GAN CIFAR D, or three 5x5 stride-2 convs."""
  if cifar:
    # (features, kernel, stride, padding, batch_norm, dropout_after)
    return dict(convs=((w(96), 3, 1, 1, False, False),
                       (w(96), 3, 2, 1, True, True),
                       (w(192), 3, 1, 1, True, False),
                       (w(192), 3, 2, 1, True, True),
                       (w(192), 3, 1, 0, True, False)),
                nin=(w(192),), dense=(), adv_pool='mean')
  return dict(convs=((w(32), 5, 2, 2, False, False),
                     (w(64), 5, 2, 2, False, False),
                     (w(128), 5, 2, 2, False, False)),
              nin=(), dense=(w(256),), adv_pool='flatten')
