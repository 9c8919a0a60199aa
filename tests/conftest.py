"""Test set-up shared by every test module.

Runs before any test module imports jax: eight fake CPU devices, so sharding
tests see a real multi-device mesh, and XLA's cheap compile mode, because the
suite's cost on a 2-core machine is compile time, not run time.
"""

import os

_FLAGS = '--xla_force_host_platform_device_count=8'
if _FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FLAGS).strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_platforms', 'cpu')
jax.config.update('jax_disable_most_optimizations', True)
