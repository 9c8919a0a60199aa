"""Sampling BN statistics recomputed for the EMA generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from sgan_jax import sampling
from sgan_jax import sharding


@pytest.fixture(scope='module')
def tiny():
  """A tiny MNIST state whose EMA params differ from the live ones and whose
  running averages are arbitrary, as after training."""
  config = helpers.load_config('mnist')
  models, st = helpers.build(config)
  r = np.random.default_rng(0)
  stacks = []
  for stack in st.stacks:
    ema = jax.tree.map(lambda p: p * 1.3 + 0.01, stack.g_ema)
    stats = jax.tree.map(
        lambda v: jnp.asarray(r.uniform(0.5, 2.0, v.shape), v.dtype),
        stack.g.batch_stats)
    stacks.append(stack.replace(g_ema=ema,
                                g=stack.g.replace(batch_stats=stats)))
  return config, models, st.replace(stacks=tuple(stacks))


def _batch_mode_decode(models, st, labels, zs):
  """Top-down generation with every G normalising by its own batch."""
  h = jax.nn.one_hot(labels, models.num_classes)
  for sm in reversed(models.stacks):
    stack = st.stacks[sm.index]
    h, _ = sm.generator.apply(stack.g.variables(stack.g_ema), h, zs[sm.index],
                              train=True, mutable=['batch_stats'])
  return h


def test_calibrated_statistics_are_the_batch_statistics_of_the_ema_g(tiny):
  _, models, st = tiny
  num, key = 40, jax.random.key(3)
  calibrated = jax.jit(sampling.make_calibrate_fn(models, num))(st, key)
  # On the calibration batch itself, fixed calibrated statistics give what
  # normalising by the batch gives.
  indices = jnp.arange(num)
  labels = indices % models.num_classes
  zs = sampling.sample_noise(models, key, indices)
  decode = jax.jit(sampling.make_decode_fn(models))
  np.testing.assert_allclose(decode(calibrated, labels, zs),
                             _batch_mode_decode(models, st, labels, zs),
                             rtol=1e-4, atol=1e-5)
  assert not np.allclose(decode(st, labels, zs), decode(calibrated, labels,
                                                        zs), atol=1e-3)
  # Only the G batch statistics change.
  for before, after in zip(st.stacks, calibrated.stacks):
    assert helpers.tree_equal(before.g.params, after.g.params)
    assert helpers.tree_equal(before.g_ema, after.g_ema)
    assert helpers.tree_equal(before.d, after.d)
    assert not helpers.tree_equal(before.g.batch_stats, after.g.batch_stats)
  assert helpers.tree_equal(st.encoder, calibrated.encoder)


def test_calibrator_is_deterministic_and_off_at_zero(tiny):
  config, models, st = tiny
  mesh = sharding.make_mesh()
  st = jax.device_put(st, sharding.replicated(mesh))
  config.log.bn_calibration_num = 24
  calibrator = sampling.BatchStatsCalibrator(models, config, mesh)
  assert helpers.tree_equal(calibrator(st), calibrator(st))
  config.log.bn_calibration_num = 0
  assert sampling.BatchStatsCalibrator(models, config, mesh)(st) is st
  config.log.bn_calibration_num = -1
  with pytest.raises(ValueError, match='bn_calibration_num'):
    sampling.BatchStatsCalibrator(models, config, mesh)
