"""sgan_jax.xla_cpu_flags: which kernels XLA:CPU gives the convolutions, on
which thread a CPU step runs, and the training steps' compile options.

The flag cases run in a fresh interpreter, since XLA reads its flags once per
process; the per-compilation options are tested in this one.
"""

import os
import subprocess
import sys
import textwrap
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp

import helpers
from sgan_jax import jitted
from sgan_jax import sharding
from sgan_jax import xla_cpu_flags

# Prints use_eigen_convolutions()'s result, whether XLA_FLAGS then holds the
# flag (and how often), and how many convolutions YNNPACK got.
_PROBE = textwrap.dedent('''
    import os, sys
    import jax, jax.numpy as jnp
    from sgan_jax import xla_cpu_flags
    if sys.argv[1] == 'late':
      jax.devices()  # Starts the backend first.
    applied = xla_cpu_flags.use_eigen_convolutions()
    again = xla_cpu_flags.use_eigen_convolutions()
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    hlo = conv.lower(jnp.ones((10, 12, 12, 64)),
                     jnp.ones((3, 3, 64, 64))).compile().as_text()
    flags = os.environ.get('XLA_FLAGS', '').split()
    print(applied, again, flags.count(xla_cpu_flags.EIGEN_CONVOLUTIONS),
          hlo.count('__ynn_fusion'))
''')


def _probe(xla_flags: str, when: str = 'early') -> tuple[list[str], str]:
  """(the probe's printed fields, its stderr)."""
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-c', _PROBE, when], env=env,
                        check=True, capture_output=True, text=True)
  return done.stdout.split(), done.stderr


class UseEigenConvolutionsTest(absltest.TestCase):

  def test_moves_convolutions_off_ynnpack(self):
    # With the flag the convolution is XLA's own (Eigen) and XLA_FLAGS holds
    # the flag once, however often it is asked for.
    self.assertEqual(_probe('')[0], ['True', 'True', '1', '0'])

  def test_too_late_changes_nothing_and_says_so(self):
    # Once the backend exists, YNNPACK keeps the convolution (as without
    # the flag) and XLA_FLAGS is left alone.
    fields, stderr = _probe('', 'late')
    self.assertEqual(fields, ['False', 'False', '0', '1'])
    self.assertIn('already initialised', stderr)

  def test_user_setting_wins(self):
    # An empty list (no YNNPACK at all) is the user's choice and stays.
    fields, _ = _probe('--xla_cpu_experimental_ynn_fusion_type=')
    self.assertEqual(fields, ['False', 'False', '0', '0'])


# Prints run_steps_on_calling_thread()'s result and whether a ~0.3 s
# single-device computation is done when its call returns: it is when it
# ran on the calling thread; an asynchronous dispatch returns at once.
_DISPATCH_PROBE = textwrap.dedent('''
    import sys
    import jax, jax.numpy as jnp
    from sgan_jax import xla_cpu_flags
    if sys.argv[1] == 'late':
      jax.devices()  # Starts the backend first.
    applied = xla_cpu_flags.run_steps_on_calling_thread()
    step = jax.jit(lambda a: jax.lax.fori_loop(
        0, 20, lambda i, b: jnp.tanh(b @ a), a))
    a = jnp.full((1024, 1024), 1e-3)
    step(a).block_until_ready()  # Compiles.
    print(applied, step(a).is_ready())
''')


def _dispatch_probe(when: str, **env) -> tuple[list[str], str]:
  """(the probe's printed fields, its stderr); `env` adds variables."""
  inherited = {k: v for k, v in os.environ.items()
               if k != 'JAX_CPU_ENABLE_ASYNC_DISPATCH'}
  env = dict(inherited, JAX_PLATFORMS='cpu', **env)
  done = subprocess.run([sys.executable, '-c', _DISPATCH_PROBE, when],
                        env=env, check=True, capture_output=True, text=True)
  return done.stdout.split(), done.stderr


class RunStepsOnCallingThreadTest(absltest.TestCase):

  def test_step_has_finished_when_its_call_returns(self):
    self.assertEqual(_dispatch_probe('early')[0], ['True', 'True'])

  def test_too_late_keeps_async_dispatch_and_says_so(self):
    fields, stderr = _dispatch_probe('late')
    self.assertEqual(fields, ['False', 'False'])
    self.assertIn('already initialised', stderr)

  def test_user_setting_wins(self):
    fields, _ = _dispatch_probe('early', JAX_CPU_ENABLE_ASYNC_DISPATCH='1')
    self.assertEqual(fields, ['False', 'False'])


class _MostOptimizations:
  """Turns `jax_disable_most_optimizations` off inside the block (the
  suite's conftest turns it on), as in a training process."""

  def __enter__(self):
    self._saved = jax.config.read('jax_disable_most_optimizations')
    jax.config.update('jax_disable_most_optimizations', False)

  def __exit__(self, *exc):
    jax.config.update('jax_disable_most_optimizations', self._saved)


def _bogus_options():
  """Patches in an option XLA refuses, naming it: a jit built inside fails
  to compile exactly when it was given `compiler_options()`."""
  return mock.patch.object(xla_cpu_flags, 'compiler_options',
                           lambda: {'xla_no_such_option': 1})


def _two_device_sampling():
  """(models, mesh, sampler args) of the tiny MNIST nets, 8 images over
  two devices."""
  config = helpers.load_config('mnist')
  models, st = helpers.build(config)
  mesh = sharding.make_mesh(jax.devices()[:2])
  idx = jnp.arange(8, dtype=jnp.int32)
  return models, mesh, (st, idx % models.num_classes, idx, jax.random.key(0))


class CompilerOptionsTest(absltest.TestCase):

  def test_llvm_o2_on_cpu(self):
    with _MostOptimizations():
      self.assertEqual(xla_cpu_flags.compiler_options(),
                       {'xla_backend_optimization_level': 2})

  def test_none_under_disable_most_optimizations(self):
    # Its level 0 (the test suite's cheap compiles) must not become 2.
    self.assertTrue(jax.config.read('jax_disable_most_optimizations'))
    self.assertEqual(xla_cpu_flags.compiler_options(), {})

  def test_user_setting_wins(self):
    saved = os.environ.get('XLA_FLAGS')
    os.environ['XLA_FLAGS'] = (
        f'{saved or ""} --xla_backend_optimization_level=3'.strip())
    try:
      with _MostOptimizations():
        self.assertEqual(xla_cpu_flags.compiler_options(), {})
    finally:
      if saved is None:
        del os.environ['XLA_FLAGS']
      else:
        os.environ['XLA_FLAGS'] = saved

  def test_compile_steps_gives_them_to_the_image_level_functions(self):
    config = helpers.load_config('mnist')
    models, st = helpers.build(config)
    mesh = sharding.make_mesh(jax.devices()[:1])
    labels = jnp.zeros((8,), jnp.int32)
    sample_args = (st, labels, labels, jax.random.key(0))
    with _MostOptimizations():
      # XLA accepts the option (a jaxlib that renamed it would fail here,
      # not silently compile at -O3).
      jitted.compile_steps(models, config, mesh)['sample'].lower(
          *sample_args).compile()
    # The options reach XLA where they are meant to: an unknown one patched
    # in is refused by the functions that run G0, not by the others (XLA's
    # defaults).
    with _bogus_options():
      compiled = jitted.compile_steps(models, config, mesh)
    step_args = (st, helpers.fake_batch(config), jax.random.key(0))
    for name in ('stack0', 'joint', 'sample'):
      with self.subTest(name), self.assertRaisesRegex(
          Exception, 'xla_no_such_option'):
        compiled[name].lower(
            *(sample_args if name == 'sample' else step_args)).compile()
    for name in ('encoder', 'stack1'):
      compiled[name].lower(*step_args).compile()
    compiled['reset_optimizers'].lower(st).compile()

  def test_cli_samplers_get_them_too(self):
    # `sample`, `evaluate` and a multi-process run's grids build their
    # sampler with `jit_sample`, in both output layouts.
    models, mesh, args = _two_device_sampling()
    with _bogus_options():
      samplers = [jitted.jit_sample(models, mesh),
                  jitted.jit_sample(models, mesh, replicate_output=True)]
    for replicate, fn in zip((False, True), samplers):
      with self.subTest(replicate=replicate), self.assertRaisesRegex(
          Exception, 'xla_no_such_option'):
        fn.lower(*args).compile()

  def test_replicated_sampler_output(self):
    models, mesh, args = _two_device_sampling()
    split = jitted.jit_sample(models, mesh)(*args)
    whole = jitted.jit_sample(models, mesh, replicate_output=True)(*args)
    self.assertTrue(whole.sharding.is_fully_replicated)
    self.assertFalse(split.sharding.is_fully_replicated)
    self.assertEqual(whole.shape, (8, 28, 28, 1))
    self.assertTrue(jnp.array_equal(whole, split))


if __name__ == '__main__':
  absltest.main()
