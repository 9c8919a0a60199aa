"""Which params each step changes; retracing, determinism, 1 vs 8 devices."""

import dataclasses

import chex
import jax
import numpy as np
import pytest

import helpers
from sgan_jax import rng
from sgan_jax import sharding
from sgan_jax import steps
from sgan_jax import jitted


@pytest.fixture(scope='module')
def tiny():
  config = helpers.load_config('mnist')
  models, st = helpers.build(config)
  hp = steps.StepConfig.from_config(config)
  batch = helpers.fake_batch(config)
  return config, models, st, hp, batch


def _changed(before, after) -> bool:
  return not helpers.tree_equal(before, after)


@pytest.mark.parametrize('i', [0, 1])
def test_d_step_changes_only_d_i(tiny, i):
  _, models, st, hp, batch = tiny
  new, metrics = jax.jit(steps.make_d_step(models, i, hp))(
      st, batch, jax.random.key(1))
  for j, (old_s, new_s) in enumerate(zip(st.stacks, new.stacks)):
    assert _changed(old_s.d.params, new_s.d.params) == (j == i)
    assert not _changed(old_s.g.params, new_s.g.params)
    assert not _changed(old_s.g.batch_stats, new_s.g.batch_stats)
    assert not _changed(old_s.g_ema, new_s.g_ema)
  assert not _changed(st.encoder.params, new.encoder.params)
  assert int(new.step) == int(st.step)
  chex.assert_tree_all_finite(metrics)
  assert {'d_loss', 'd_adv', 'd_ent'} <= set(metrics)


def _key_bits(key) -> tuple[int, ...]:
  return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


@pytest.mark.parametrize('i', [0, 1])
def test_d_step_draws_z_dropout_and_noise_from_distinct_keys(
    tiny, monkeypatch, i):
  """The key of a D update feeds both z and the D passes; no key that is
  consumed (z's, each pass's dropout and noise) may equal another, nor
  hang below another (the fake pass's parent once was z's own key)."""
  _, models, st, hp, batch = tiny
  z_parents, pass_keys = [], []
  uniform, discriminate = steps._uniform, steps._discriminate

  def recording_uniform(key, *args):
    z_parents.append(key)
    return uniform(key, *args)

  def recording_discriminate(module, d_vars, h, key):
    pass_keys.append(key)
    return discriminate(module, d_vars, h, key)

  monkeypatch.setattr(steps, '_uniform', recording_uniform)
  monkeypatch.setattr(steps, '_discriminate', recording_discriminate)
  # Not jitted, so the keys are concrete values (none depends on a param).
  steps.make_d_step(models, i, hp)(st, batch, jax.random.key(1))
  assert len(z_parents) == 1 and len(pass_keys) == 2  # real, fake
  z_key = rng.stream(z_parents[0], rng.Z)
  consumed = [z_key] + [rng.stream(k, s) for k in pass_keys
                        for s in (rng.D_DROPOUT, rng.D_INPUT_NOISE)]
  bits = [_key_bits(k) for k in consumed + pass_keys]
  assert len(set(bits)) == len(bits)


def test_named_streams_are_distinct():
  streams = {n: v for n, v in vars(rng).items()
             if n.isupper() and isinstance(v, int)}
  assert len(set(streams.values())) == len(streams), streams


@pytest.mark.parametrize('i', [0, 1])
def test_g_step_changes_only_g_i(tiny, i):
  _, models, st, hp, batch = tiny
  new, metrics = jax.jit(steps.make_g_step(models, i, hp))(
      st, batch, jax.random.key(1))
  for j, (old_s, new_s) in enumerate(zip(st.stacks, new.stacks)):
    assert _changed(old_s.g.params, new_s.g.params) == (j == i)
    assert _changed(old_s.g_ema, new_s.g_ema) == (j == i)
    assert not _changed(old_s.d.params, new_s.d.params)
  assert not _changed(st.encoder.params, new.encoder.params)
  chex.assert_tree_all_finite(metrics)
  assert {'g_adv', 'g_cond', 'g_ent', 'g_loss', 'sample_acc'} <= set(metrics)


def test_encoder_step_changes_only_the_encoder(tiny):
  _, models, st, hp, batch = tiny
  new, _ = jax.jit(steps.make_encoder_step(models, hp))(
      st, batch, jax.random.key(0))
  assert _changed(st.encoder.params, new.encoder.params)
  assert helpers.tree_equal(st.stacks, new.stacks)
  assert int(new.step) == int(st.step) + 1


def test_random_flip_mirrors_whole_images_about_half_of_them():
  x = np.arange(64 * 3 * 4 * 2, dtype=np.float32).reshape(64, 3, 4, 2)
  y = np.asarray(steps.random_flip(jax.random.key(3), x))
  mirrored = [np.array_equal(y[i], x[i, :, ::-1]) for i in range(64)]
  kept = [np.array_equal(y[i], x[i]) for i in range(64)]
  assert all(m != k for m, k in zip(mirrored, kept))
  assert 16 < sum(mirrored) < 48
  np.testing.assert_array_equal(
      steps.random_flip(jax.random.key(3), x), y)


def test_encoder_flip_only_mirrors_the_images(tiny):
  """On left-right symmetric images the flipping step is the plain one;
  on the others it trains on other inputs."""
  _, models, st, hp, batch = tiny
  plain = jax.jit(steps.make_encoder_step(models, hp))
  flipping = jax.jit(steps.make_encoder_step(
      models, dataclasses.replace(hp, encoder_flip=True)))
  key = jax.random.key(0)
  symmetric = dict(batch, image=np.maximum(batch['image'],
                                           batch['image'][:, :, ::-1]))
  assert helpers.tree_equal(plain(st, symmetric, key)[0].encoder.params,
                            flipping(st, symmetric, key)[0].encoder.params)
  assert not helpers.tree_equal(plain(st, batch, key)[0].encoder.params,
                                flipping(st, batch, key)[0].encoder.params)


def test_joint_step_changes_every_stack_but_not_the_encoder(tiny):
  _, models, st, hp, batch = tiny
  new, metrics = jax.jit(steps.make_joint_step(models, hp))(
      st, batch, jax.random.key(0))
  for old_s, new_s in zip(st.stacks, new.stacks):
    assert _changed(old_s.g.params, new_s.g.params)
    assert _changed(old_s.d.params, new_s.d.params)
  assert not _changed(st.encoder.params, new.encoder.params)
  assert 'joint/stack0/g_cond' in metrics and 'joint/stack1/d_loss' in metrics


def test_joint_lower_weight_zero_blocks_gradient_into_upper_stack(tiny):
  # Weight 0 (original MNIST) vs 1: only G1's update may differ.
  config, models, st, _, batch = tiny
  hp0 = steps.StepConfig.from_config(config)
  assert hp0.joint_lower_weight == 0.0
  a, _ = jax.jit(steps.make_joint_step(models, hp0))(
      st, batch, jax.random.key(0))
  hp_w = dataclasses.replace(hp0, joint_lower_weight=1.0)
  b, _ = jax.jit(steps.make_joint_step(models, hp_w))(
      st, batch, jax.random.key(0))
  # Same D updates (D losses do not depend on the weight) ...
  assert helpers.tree_equal(a.stacks[1].d.params, b.stacks[1].d.params)
  # ... same G0 update, different G1 update.
  assert helpers.tree_equal(a.stacks[0].g.params, b.stacks[0].g.params)
  assert _changed(a.stacks[1].g.params, b.stacks[1].g.params)


def test_stack_step_compiles_once_and_is_deterministic(tiny):
  _, models, st, hp, batch = tiny
  fn = jax.jit(chex.assert_max_traces(steps.make_stack_step(models, 0, hp),
                                      n=1))
  key = jax.random.key(3)
  s1 = st
  for _ in range(3):
    s1, _ = fn(s1, batch, key)
  s2 = st
  for _ in range(3):
    s2, _ = fn(s2, batch, key)
  assert int(s1.step) == 3
  assert helpers.tree_equal(s1, s2)


def test_g_steps_heuristic_counts_updates(tiny):
  config, models, st, _, batch = tiny
  hp = steps.StepConfig.from_config(config)
  hp = dataclasses.replace(hp, g_steps_by_d_loss=True)
  _, metrics = jax.jit(steps.make_stack_step(models, 1, hp))(
      st, batch, jax.random.key(0))
  d_adv = float(metrics['stack1/d_adv'])
  expected = 1 if d_adv > 0.65 else 3 if d_adv > 0.5 else 5 if d_adv > 0.3 \
      else 7
  assert int(metrics['stack1/g_steps']) == expected


def _run_steps(config, models, st, batch, devices):
  mesh = sharding.make_mesh(devices)
  compiled = jitted.compile_steps(models, config, mesh)
  repl = sharding.replicated(mesh)
  # A host copy: the steps donate their input, and `st` is shared by tests.
  st = jax.device_put(jax.device_get(st), repl)
  b = jax.device_put(batch, sharding.batch_sharding(mesh))
  key = jax.device_put(jax.random.key(0), repl)
  out = []
  # The joint step runs every G and D; the encoder step checks the update of
  # a network with no BatchNorm.
  for name in ('encoder', 'joint'):
    st, m = compiled[name](st, b, key)
    out.append(jax.device_get(m))
  return jax.device_get(st), out


def test_one_and_eight_devices_agree(tiny):
  config, models, st, _, batch = tiny
  assert jax.device_count() == 8
  s1, m1 = _run_steps(config, models, st, batch, jax.devices()[:1])
  s8, m8 = _run_steps(config, models, st, batch, jax.devices())
  chex.assert_trees_all_close(s1.stacks, s8.stacks, atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(s1.encoder.params, s8.encoder.params,
                              atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(m1, m8, atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(s1.step, s8.step)


def test_ema_of_g_warms_up_from_the_initial_params(tiny):
  _, models, st, hp, batch = tiny
  hp = dataclasses.replace(hp, ema_decay=0.999)
  g_step = jax.jit(steps.make_g_step(models, 0, hp))
  new, _ = g_step(st, batch, jax.random.key(1))
  # After G's first update (t = 1) the decay is (1 + 1) / (10 + 1), not
  # 0.999: the average follows the first updates instead of staying at init.
  d = 2.0 / 11.0
  for e, p0, p1 in zip(jax.tree.leaves(new.stacks[0].g_ema),
                       jax.tree.leaves(st.stacks[0].g.params),
                       jax.tree.leaves(new.stacks[0].g.params)):
    np.testing.assert_allclose(e, d * p0 + (1 - d) * p1, rtol=1e-5,
                               atol=1e-7)
