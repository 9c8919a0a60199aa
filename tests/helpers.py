"""Shared builders for the tests: tiny configs, fake batches, fresh states."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from sgan_jax import architectures
from sgan_jax import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data')


def load_config(name: str, preset: str | None = 'tiny'):
  """configs/<name>.py:<preset>, unlocked so a test may adjust it."""
  spec = importlib.util.spec_from_file_location(
      f'config_{name}', os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
  config.unlock()
  # XLA's own convolutions compile ~2x faster on CPU than the matmul
  # formulation; layers_test proves the two equal, and the CLI tests run the
  # default ('auto') path end to end.
  config.model.conv_impl = 'xla'
  return config


IMAGE_SHAPES = {'mnist': (28, 28, 1), 'cifar10': (32, 32, 3),
                'svhn_cropped': (32, 32, 3)}


def fake_batch(config, seed: int = 0, batch: int | None = None):
  shape = IMAGE_SHAPES[config.data.name]
  b = batch or config.data.batch_size
  r = np.random.default_rng(seed)
  return {'image': r.integers(0, 256, (b, *shape), dtype=np.uint8),
          'label': (np.arange(b) % 10).astype(np.int32)}


def build(config):
  """(models, fresh state) for a config, on the default device."""
  shape = IMAGE_SHAPES[config.data.name]
  models = architectures.build_models(config, 10, shape)
  st = jax.jit(lambda k: state_lib.create_state(
      models, config, k, jnp.zeros(shape)))(jax.random.key(config.seed))
  return models, st


def tree_equal(a, b) -> bool:
  """Bitwise equality of the leaves (static fields such as optimizers may be
  different objects in states built by different calls)."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
