"""XLA:CPU options for the SGAN steps, set before JAX starts XLA.

XLA:CPU hands each convolution either to YNNPACK (its default) or to Eigen.
On the SGAN layer shapes (32-128 channels, 4-24 pixels a side) YNNPACK runs
each convolution on one core, and the thunk executor often finds nothing
for the other one to do; Eigen splits each convolution over all cores. On
the 2-core VM of `benchmarks/RESULTS.md` that made the MNIST G0/D0 step 6 %
faster and the encoder step 9 % (in-process A/B). Matmuls and reductions
stay on YNNPACK (its default for them). First layers, where YNNPACK's
convolutions were the faster, are matmuls anyway
(`conv_cpu.correlate_patches`).

XLA reads its flags once, when JAX creates its first backend, so this must
run before the first computation; a user's own setting of the same flag in
``XLA_FLAGS`` wins. `compiler_options` is per compilation instead: the
options `jitted` gives the jits of the G0 steps and of the sampler.
"""

import os
from typing import Any

from absl import logging

_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# The default set (YNNPACK dots, convolutions and reductions) less the
# convolutions.
_VALUE = ('LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
          'LIBRARY_FUSION_TYPE_REDUCE')
EIGEN_CONVOLUTIONS = f'--{_FLAG}={_VALUE}'


def _backends_initialized() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return xla_bridge.backends_are_initialized()


def use_eigen_convolutions() -> bool:
  """Adds `EIGEN_CONVOLUTIONS` to ``XLA_FLAGS`` for this process.

  Returns:
    Whether ``XLA_FLAGS`` now holds it: False when it sets the option
    otherwise (the user's choice stays) or when JAX's backends exist
    already (too late; logged).
  """
  flags = os.environ.get('XLA_FLAGS', '')
  if f'--{_FLAG}' in flags:  # Set by the user, or by an earlier call.
    return EIGEN_CONVOLUTIONS in flags.split()
  if _backends_initialized():
    logging.warning('XLA is already initialised; convolutions stay on '
                    'YNNPACK (set XLA_FLAGS=%s to change that).',
                    EIGEN_CONVOLUTIONS)
    return False
  os.environ['XLA_FLAGS'] = f'{flags} {EIGEN_CONVOLUTIONS}'.strip()
  return True


# JAX's own switch; an environment variable of this name is the user's.
_ASYNC_DISPATCH_OPTION = 'jax_cpu_enable_async_dispatch'


def run_steps_on_calling_thread() -> bool:
  """Turns off JAX's asynchronous dispatch of single-device CPU programs.

  With it on (JAX's default), each call of a compiled step is handed to a
  worker thread, which also allocates the step's temporary buffer. glibc
  serves a worker thread from a per-thread heap of at most 64 MiB, so a
  larger buffer (MNIST stack 0: 117 MiB) is mmap'd and unmapped on every
  step whatever `host_memory.keep_freed_memory` says, and each step faults
  its pages in afresh: ~30,000 page faults per step on the 2-core VM of
  `benchmarks/RESULTS.md`. Run on the calling thread, the buffer comes from
  the main heap, which `keep_freed_memory` keeps mapped: stack 0 ~15 %
  faster, joint ~10 %, encoder ~6 % there. Multi-device programs are not
  affected (JAX dispatches them asynchronously either way), and the
  training loop syncs with the host only at log steps, so the Python thread
  waiting for each step costs nothing measurable.

  Like `use_eigen_convolutions` it must run before JAX creates its CPU
  client, and a user's own ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` wins.

  Returns:
    Whether single-device steps now run on the calling thread: False when
    the user set the option or when JAX's backends exist already (too late;
    logged).
  """
  import jax  # pylint: disable=g-import-not-at-top
  env = os.environ.get(_ASYNC_DISPATCH_OPTION.upper())
  if env is not None:  # The user's choice.
    return not jax.config.read(_ASYNC_DISPATCH_OPTION)
  if _backends_initialized():
    if jax.config.read(_ASYNC_DISPATCH_OPTION):
      logging.warning('JAX is already initialised; CPU steps keep their '
                      'asynchronous dispatch (set %s=0 to change that).',
                      _ASYNC_DISPATCH_OPTION.upper())
      return False
    return True
  jax.config.update(_ASYNC_DISPATCH_OPTION, False)
  return True


_OPTIMIZATION_LEVEL_FLAG = 'xla_backend_optimization_level'
# LLVM's -O2 instead of XLA's default -O3 for the CPU kernels. In-process
# A/B on the 2-core VM of `benchmarks/RESULTS.md`: the MNIST stack 0 and
# joint steps compile 16-20 % faster (9.2 vs 11.0 s, 10.4 vs 12.5 s) and
# ran at the same speed, as did the sampler (paired ratios 0.99-1.03; loop
# fusions alone, e.g. Winograd's input transform or Adam, equal too). The
# small encoder and stack 1 steps ran 2-4 % slower, so `jitted` gives the
# options to the G0 functions only. Results equal -O3's up to float
# rounding, not bitwise.
_OPTIMIZATION_LEVEL = 2


def compiler_options() -> dict[str, Any]:
  """XLA options for compiling the functions that run G0 (the stack 0 and
  joint steps, the sampler) on this backend.

  Pass them as ``jax.jit(..., compiler_options=...)`` (as `jitted` does) or
  ``lowered.compile(compiler_options=...)``: unlike ``XLA_FLAGS`` they apply
  to that function's compilations only, and they are part of the persistent
  compilation cache's key.

  Returns:
    ``{'xla_backend_optimization_level': 2}`` on the CPU backend (see
    `_OPTIMIZATION_LEVEL`); ``{}`` on other backends, under
    ``jax_disable_most_optimizations`` (whose level 0 must stay, e.g. in the
    tests) and when ``XLA_FLAGS`` sets the level (the user's choice).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if (jax.default_backend() != 'cpu'
      or jax.config.read('jax_disable_most_optimizations')
      or f'--{_OPTIMIZATION_LEVEL_FLAG}' in os.environ.get('XLA_FLAGS', '')):
    return {}
  return {_OPTIMIZATION_LEVEL_FLAG: _OPTIMIZATION_LEVEL}
