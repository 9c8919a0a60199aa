"""Network shapes and parameter counts against the original code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from sgan_jax import architectures
from sgan_jax import state as state_lib


def _abstract_state(config, shape):
  models = architectures.build_models(config, 10, shape)
  st = jax.eval_shape(lambda k: state_lib.create_state(
      models, config, k, jnp.zeros(shape)), jax.random.key(0))
  return models, st


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_cifar_networks_match_the_original_parameter_counts():
  # Trainable parameters of the original Theano CIFAR-10 code
  # (shared/reference/sgan_original_code.md section 12).
  _, st = _abstract_state(helpers.load_config('cifar10', None), (32, 32, 3))
  assert _count(st.encoder.params) == 1_031_818
  assert _count(st.stacks[1].g.params) == 808_192
  assert _count(st.stacks[0].g.params) == 5_367_171
  assert _count(st.stacks[1].d.params) == 425_532
  assert _count(st.stacks[0].d.params) == 1_066_010


@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)),
                                        ('cifar10', (32, 32, 3))])
def test_level_shapes_chain_top_down(name, shape):
  config = helpers.load_config(name)
  models, st = _abstract_state(config, shape)
  labels = jnp.zeros((3, 10))
  h = labels
  for sm in reversed(models.stacks):
    z = jnp.zeros((3, sm.z_dim))
    s = st.stacks[sm.index]
    h = jax.eval_shape(
        lambda p, b, c, z, sm=sm: sm.generator.apply(
            {'params': p, 'batch_stats': b}, c, z, train=False),
        s.g.params, s.g.batch_stats, h, z)
    logits, z_pred = jax.eval_shape(
        lambda p, b, x, sm=sm: sm.discriminator.apply(
            {'params': p, 'batch_stats': b}, x, train=False),
        s.d.params, s.d.batch_stats, h)
    assert z_pred.shape == (3, sm.z_dim)
    assert logits.shape == (3, 10 if config.model.d_class_logits else 1)
  assert h.shape == (3, *shape)


@pytest.mark.parametrize('preset,levels', [
    ('tiny,three_stacks', ['pool2', 'fc3', 'logits']),
    ('three_stacks,tiny', ['pool2', 'fc3', 'logits']),
    ('tiny,single_gan', ['logits']),
])
def test_level_presets_build_matching_stacks(preset, levels):
  config = helpers.load_config('mnist', preset)
  models, st = _abstract_state(config, (28, 28, 1))
  assert [sm.cond_level for sm in models.stacks] == levels
  assert len(st.stacks) == len(config.schedule.stack_steps) == len(levels)
  if len(levels) == 3:
    assert models.stacks[1].generator.out_dim == models.level_dims['pool2']
  else:   # One stack: its steps absorb the joint phase's.
    assert config.schedule.stack_steps == (4,)
    assert config.schedule.joint_steps == 0


def test_bad_model_configs_are_clear():
  config = helpers.load_config('mnist')
  config.stacks[0].z_dim = 0
  with pytest.raises(ValueError, match='z_dim must be positive'):
    architectures.build_models(config, 10, (28, 28, 1))
  config = helpers.load_config('mnist')
  config.model.levels = ('fc3', 'pool2')
  with pytest.raises(ValueError, match='levels'):
    architectures.build_models(config, 10, (28, 28, 1))
  config = helpers.load_config('mnist')
  config.model.levels = ('pool2', 'fc3')    # without the stacks to match
  with pytest.raises(ValueError, match='three_stacks'):
    architectures.build_models(config, 10, (28, 28, 1))
  config = helpers.load_config('mnist')
  config.model.q_activation = 'tanh'
  with pytest.raises(ValueError, match='q_activation'):
    architectures.build_models(config, 10, (28, 28, 1))
  config = helpers.load_config('mnist')
  config.model.arch = 'resnet'
  with pytest.raises(ValueError, match='arch'):
    architectures.build_models(config, 10, (28, 28, 1))


@pytest.mark.parametrize('shape', [(3, 24, 24, 4), (2, 9, 7, 3)])
def test_max_pool_2x2_equals_flax_max_pool_in_value_and_gradient(shape):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from sgan_jax import models  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), shape)
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(models.max_pool_2x2(x), ref(x))
  loss = lambda pool: lambda x: jnp.sum(jnp.sin(pool(x)) * jnp.cos(pool(x)))
  np.testing.assert_array_equal(jax.grad(loss(models.max_pool_2x2))(x),
                                jax.grad(loss(ref))(x))
  # Ties: a window of equal pixels sends its whole cotangent to the first
  # one in row-major order, as flax's (select-and-scatter) gradient does.
  ties = jnp.round(x)
  np.testing.assert_array_equal(jax.grad(loss(models.max_pool_2x2))(ties),
                                jax.grad(loss(ref))(ties))
  g = jax.grad(lambda v: jnp.sum(models.max_pool_2x2(v)))(jnp.ones(shape))
  np.testing.assert_array_equal(g[:, 0:2 * (shape[1] // 2):2,
                                  0:2 * (shape[2] // 2):2], 1.0)
  assert float(jnp.sum(g)) == np.prod(
      (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))


def test_relu_after_pool_equals_pool_after_relu():
  # The encoder runs pool -> ReLU in place of ReLU -> pool: the same values
  # and gradients, including windows whose maximum is 0 or tied.
  from sgan_jax import models  # pylint: disable=g-import-not-at-top
  x = jnp.round(2 * jax.random.normal(jax.random.key(1), (2, 10, 8, 3)))
  r = jax.random.normal(jax.random.key(2), (2, 5, 4, 3))
  before = lambda v: jnp.sum(r * models.max_pool_2x2(jax.nn.relu(v)))
  after = lambda v: jnp.sum(r * jax.nn.relu(models.max_pool_2x2(v)))
  np.testing.assert_array_equal(before(x), after(x))
  np.testing.assert_array_equal(jax.grad(before)(x), jax.grad(after)(x))
