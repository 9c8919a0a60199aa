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
# The offline copies (shared/data/PROVENANCE.md): MNIST's official archives,
# CIFAR-10's JPEG tars.
MNIST_DIR = os.path.join(SHARED_DATA, 'mnist')
CIFAR10_DIR = os.path.join(SHARED_DATA, 'cifar10')


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


def leaves_by_path(tree) -> dict[str, np.ndarray]:
  """The leaves on the host, keyed by path: comparable across states whose
  static fields (the optimizers) are different objects."""
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


def tree_equal(a, b) -> bool:
  """Bitwise equality of the leaves (static fields such as optimizers may be
  different objects in states built by different calls)."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def random_inception_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """Random FID-InceptionV3 weights in torch layout, scaled so activations
  stay O(1) through all 94 conv layers (He-normal convs, BN statistics away
  from the identity so a transposed or swapped array shows)."""
  from sgan_jax import inception  # pylint: disable=g-import-not-at-top
  rs = np.random.RandomState(seed)
  arrays = {}
  for name, shape in inception.expected_shapes().items():
    if name.endswith('conv.weight'):
      a = rs.randn(*shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif name == 'fc.weight':
      a = rs.randn(*shape) / np.sqrt(shape[1])
    elif name.endswith('running_var'):
      a = rs.uniform(0.5, 2.0, shape)
    elif name.endswith('bn.weight'):
      a = rs.uniform(0.5, 1.5, shape)
    else:  # BN bias and mean, fc bias
      a = rs.randn(*shape) * 0.1
    arrays[name] = a.astype(np.float32)
  return arrays
