"""XLA:CPU options for the SGAN convolutions, set before JAX starts XLA.

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
``XLA_FLAGS`` wins.
"""

import os

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
