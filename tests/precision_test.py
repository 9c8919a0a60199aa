"""config.dtype='bfloat16': bf16 activations, float32 params and optimizer."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from sgan_jax import layers
from sgan_jax import steps

# Enough Adam steps (lr 1e-3) on one fixed batch for E's loss to fall clearly
# above bf16's resolution (~0.016 at a loss of ~2.3), few enough to stay cheap.
_ENCODER_STEPS = 6


@pytest.fixture(scope='module')
def bf16():
  config = helpers.load_config('mnist')
  config.dtype = 'bfloat16'
  models, st = helpers.build(config)
  hp = steps.StepConfig.from_config(config)
  return config, models, st, hp, helpers.fake_batch(config)


def _float_dtypes(tree) -> set[str]:
  return {str(x.dtype) for x in jax.tree.leaves(tree)
          if jnp.issubdtype(x.dtype, jnp.floating)}


def _assert_float32_storage(st) -> None:
  """Every stored float (params, Adam moments, BN averages, EMA) is fp32."""
  parts = {'encoder.params': st.encoder.params,
           'encoder.opt_state': st.encoder.opt_state}
  for i, s in enumerate(st.stacks):
    for name, net in (('g', s.g), ('d', s.d)):
      parts[f'stacks[{i}].{name}.params'] = net.params
      parts[f'stacks[{i}].{name}.opt_state'] = net.opt_state
      parts[f'stacks[{i}].{name}.batch_stats'] = net.batch_stats
    parts[f'stacks[{i}].g_ema'] = s.g_ema
  for name, tree in parts.items():
    dtypes = _float_dtypes(tree)
    # An empty tree (e.g. a D without BatchNorm) has nothing to check.
    assert dtypes <= {'float32'}, f'{name} holds {dtypes}'
  # The Adam moments must exist: an empty opt_state would pass vacuously.
  assert _float_dtypes(st.stacks[0].g.opt_state) == {'float32'}


def test_fresh_state_is_float32(bf16):
  _, _, st, _, _ = bf16
  _assert_float32_storage(st)


def test_updates_keep_params_and_optimizer_state_float32(bf16):
  # The joint step updates every G and D (and their BN averages) at once;
  # a bf16 gradient or update leaking into the state would show here.
  _, models, st, hp, batch = bf16
  new, metrics = jax.jit(steps.make_joint_step(models, hp))(
      st, batch, jax.random.key(0))
  _assert_float32_storage(new)
  chex.assert_tree_all_finite((new, metrics))
  for old_s, new_s in zip(st.stacks, new.stacks):
    assert not helpers.tree_equal(old_s.g.params, new_s.g.params)


def test_networks_compute_in_bf16_and_their_outputs_are_finite(bf16):
  _, models, st, hp, batch = bf16
  batch = jax.tree.map(jnp.asarray, batch)
  # Every Dense/Conv/ConvTranspose output: the layers whose dtype decides
  # the activations. (What leaves a network may be cast to fp32 on purpose:
  # D's logits and Q's z for the losses, G0's sigmoid image.)
  layer_outputs = lambda mdl, _: isinstance(
      mdl, (nn.Dense, layers.Conv, layers.ConvTranspose))

  def apply(module, variables, *args):
    out, inter = module.apply(variables, *args, train=False,
                              capture_intermediates=layer_outputs,
                              mutable=['intermediates'])
    return out, inter['intermediates']

  @jax.jit
  def outputs(st, batch, key):
    hs = steps.real_levels(models, st, batch, hp)
    out, inner = {}, {}
    for sm in models.stacks:
      i, s = sm.index, st.stacks[sm.index]
      z = jax.random.uniform(jax.random.fold_in(key, i),
                             (hs[i].shape[0], sm.z_dim))
      out[f'g{i}'], inner[f'g{i}'] = apply(sm.generator, s.g.variables(),
                                           hs[i + 1], z)
      (out[f'd{i}_logits'], out[f'd{i}_q']), inner[f'd{i}'] = apply(
          sm.discriminator, s.d.variables(), out[f'g{i}'])
    return out, inner

  out, inner = jax.device_get(outputs(st, batch, jax.random.key(1)))
  for net, tree in inner.items():
    dtypes = {str(x.dtype) for x in jax.tree.leaves(tree)}
    # Params are fp32: a layer without the bf16 dtype would promote to fp32.
    assert dtypes == {'bfloat16'}, (net, dtypes)
  for name, x in out.items():
    assert np.all(np.isfinite(np.asarray(x, np.float32))), name
  g0 = np.asarray(out['g0'], np.float32)
  # G0 ends in a sigmoid on MNIST: a non-degenerate image in [0, 1].
  assert g0.shape == batch['image'].shape
  assert 0.0 <= g0.min() and g0.max() <= 1.0 and g0.std() > 0


def test_encoder_loss_falls_on_a_fixed_batch(bf16):
  _, models, st, hp, batch = bf16
  step = jax.jit(steps.make_encoder_step(models, hp))
  key = jax.random.key(0)
  losses = []
  for _ in range(_ENCODER_STEPS):
    st, metrics = step(st, batch, key)
    losses.append(float(metrics['encoder/loss']))
  assert np.all(np.isfinite(losses)), losses
  # Measured 2.52 -> 2.34 after 6 steps; 0.08 is five bf16 ulps at 2.3.
  assert losses[-1] < losses[0] - 0.08, losses
  _assert_float32_storage(st)


def test_bf16_first_step_matches_float32_to_bf16_precision(bf16):
  # Same init (params are fp32 in both), so the first losses differ only by
  # bf16 rounding of the activations.
  config, models, st, hp, batch = bf16
  fp32 = config.copy_and_resolve_references()
  fp32.dtype = 'float32'
  models32, st32 = helpers.build(fp32)
  assert helpers.tree_equal(st.encoder.params, st32.encoder.params)
  _, m16 = jax.jit(steps.make_encoder_step(models, hp))(
      st, batch, jax.random.key(0))
  _, m32 = jax.jit(steps.make_encoder_step(models32, hp))(
      st32, batch, jax.random.key(0))
  np.testing.assert_allclose(float(m16['encoder/loss']),
                             float(m32['encoder/loss']), rtol=2e-2)
