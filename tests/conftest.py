"""Test set-up shared by every test module.

Runs before any test module imports jax: eight fake CPU devices, so sharding
tests see a real multi-device mesh, and XLA's cheap compile mode, because the
suite's cost on a 2-core machine is compile time, not run time.
"""

import fcntl
import os
import tempfile

import pytest

_FLAGS = '--xla_force_host_platform_device_count=8'
if _FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' ' + _FLAGS).strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# Set through the environment so CLI subprocesses of the tests get them too.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
# Many tests compile the same tiny steps (in-process, in xdist workers and in
# CLI subprocesses): XLA's persistent cache compiles each once per machine.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'sgan_jax_xla_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# The convolution kernels and step dispatch the CLIs choose
# (sgan_jax/xla_cpu_flags.py; it imports jax, so after the settings above).
from sgan_jax import xla_cpu_flags  # pylint: disable=g-import-not-at-top
xla_cpu_flags.use_eigen_convolutions()
xla_cpu_flags.run_steps_on_calling_thread()
import jax  # pylint: disable=g-import-not-at-top

assert jax.config.read("jax_disable_most_optimizations")

import helpers  # pylint: disable=g-import-not-at-top,g-bad-import-order


@pytest.fixture(scope='session')
def mnist_tfds_dir(tmp_path_factory):
  """A tfds data dir with MNIST built from the offline archives.

  Built once per test run and shared by the xdist workers (each would
  otherwise spend 30-60 s of a 2-core machine building its own), under a
  file lock; the first user builds it through `input_pipeline.load_split`,
  so the offline build itself is exercised by whichever test comes first.
  """
  if not os.path.isfile(os.path.join(helpers.MNIST_DIR,
                                     'train-images-idx3-ubyte.gz')):
    pytest.skip(f'offline MNIST archives not found in {helpers.MNIST_DIR}')
  base = tmp_path_factory.getbasetemp()
  # xdist's local workers get basetemps `popen-gw<i>` in the run's own one;
  # anywhere else the parent may outlive the run, so it is not shared.
  shared = base.parent if base.name.startswith('popen-') else base
  root = shared / 'mnist_tfds'
  root.mkdir(exist_ok=True)
  with open(root / '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (root / '.built').exists():
      from sgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
      input_pipeline.load_split(
          {'name': 'mnist', 'data_dir': str(root),
           'manual_dir': helpers.MNIST_DIR}, 'test')
      (root / '.built').touch()
  return str(root)
