"""sgan_jax.cli: the persistent compilation cache the CLIs switch on, and
how CPU steps are dispatched.

The cache cases run in a fresh interpreter each, since JAX opens its cache
once per process (and this one's is the suite's own, tests/conftest.py).
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest

from sgan_jax import cli

# Parses the CLI flags given, compiles one function and prints the cache
# folder in use; with jax_log_compiles a persistent-cache hit is logged.
_PROBE = textwrap.dedent('''
    import sys
    import jax, jax.numpy as jnp
    from sgan_jax import cli
    cli.parse_flags(['probe'] + sys.argv[1:])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    jax.config.update('jax_log_compiles', True)
    y = jax.jit(lambda x: jnp.sin(x) * 2 + x.sum())(jnp.arange(3.0))
    print(jax.config.jax_compilation_cache_dir, y.tolist())
''')


def _probe(*flags: str, **env: str) -> tuple[list[str], str]:
  """(the probe's printed fields, its stderr)."""
  done = subprocess.run([sys.executable, '-c', _PROBE, *flags],
                        env=dict(os.environ, JAX_PLATFORMS='cpu', **env),
                        check=True, capture_output=True, text=True)
  return done.stdout.split(maxsplit=1), done.stderr


class DefaultDirTest(absltest.TestCase):

  def _default(self, **env: str | None) -> str:
    saved = dict(os.environ)
    try:
      for k, v in env.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
      return cli.default_compilation_cache_dir()
    finally:
      os.environ.clear()
      os.environ.update(saved)

  def test_jax_variable_wins(self):
    self.assertEqual(self._default(JAX_COMPILATION_CACHE_DIR='/a',
                                   XDG_CACHE_HOME='/b'), '/a')

  def test_xdg_cache_home(self):
    self.assertEqual(self._default(JAX_COMPILATION_CACHE_DIR=None,
                                   XDG_CACHE_HOME='/b'), '/b/sgan_jax/xla')

  def test_home_cache(self):
    self.assertEqual(
        self._default(JAX_COMPILATION_CACHE_DIR=None, XDG_CACHE_HOME=None),
        os.path.join(os.path.expanduser('~'), '.cache', 'sgan_jax', 'xla'))


class CacheFlagTest(absltest.TestCase):

  def _tmp(self) -> pathlib.Path:
    return pathlib.Path(self.enterContext(tempfile.TemporaryDirectory()))

  def test_second_run_loads_what_the_first_wrote(self):
    cache = self._tmp() / 'xla'
    (folder, first), err1 = _probe(f'--compilation_cache_dir={cache}')
    self.assertEqual(folder, str(cache))
    entries = sorted(p.name for p in cache.iterdir())
    self.assertNotEmpty(entries)
    self.assertNotIn('cache hit', err1)
    (_, second), err2 = _probe(f'--compilation_cache_dir={cache}')
    self.assertEqual(second, first)
    self.assertIn('Persistent compilation cache hit', err2)
    self.assertEqual(sorted(p.name for p in cache.iterdir()), entries)

  def test_default_follows_the_environment(self):
    cache = self._tmp() / 'env'
    (folder, _), _ = _probe(JAX_COMPILATION_CACHE_DIR=str(cache))
    self.assertEqual(folder, str(cache))
    self.assertNotEmpty(list(cache.iterdir()))

  def test_empty_flag_turns_it_off(self):
    cache = self._tmp() / 'env'
    (folder, _), err = _probe('--compilation_cache_dir=',
                              JAX_COMPILATION_CACHE_DIR=str(cache))
    self.assertEqual(folder, 'None')
    self.assertFalse(cache.exists())
    self.assertNotIn('cache hit', err)


class DispatchFlagTest(absltest.TestCase):

  def _async_dispatch(self, *flags: str) -> str:
    """JAX's async-dispatch option after the CLIs' flag parsing."""
    probe = ("import sys, jax; from sgan_jax import cli; "
             "cli.parse_flags(['probe'] + sys.argv[1:]); "
             "print(jax.config.read('jax_cpu_enable_async_dispatch'))")
    env = {k: v for k, v in os.environ.items()
           if k != 'JAX_CPU_ENABLE_ASYNC_DISPATCH'}
    done = subprocess.run([sys.executable, '-c', probe, *flags],
                          env=dict(env, JAX_PLATFORMS='cpu'), check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()

  def test_steps_run_on_the_calling_thread_by_default(self):
    self.assertEqual(self._async_dispatch(), 'False')

  def test_flag_keeps_async_dispatch(self):
    self.assertEqual(self._async_dispatch('--cpu_async_dispatch'), 'True')


if __name__ == '__main__':
  absltest.main()
