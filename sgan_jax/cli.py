"""What the command-line entry points share: flag parsing, the host
allocator and XLA:CPU settings, and bad input reported as one `error:` line
instead of a traceback."""

import sys

from absl import flags

from sgan_jax import host_memory
from sgan_jax import input_pipeline
from sgan_jax import xla_cpu_flags

_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Keep memory the process frees mapped for '
    'reuse (glibc mallopt; see sgan_jax/host_memory.py): XLA:CPU steps then '
    'stop page-faulting their buffers in afresh. The resident size stays at '
    'its peak.')
_EIGEN_CONVOLUTIONS = flags.DEFINE_bool(
    'eigen_convolutions', True, 'Run XLA:CPU convolutions on Eigen (all '
    'cores per convolution) rather than YNNPACK; see '
    'sgan_jax/xla_cpu_flags.py. No effect on GPU/TPU.')

# Errors that mean "bad input" (or a diverged run).
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError,
               NotImplementedError, input_pipeline.DataError)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config-override errors as one line.

  Also applies --keep_freed_memory and --eigen_convolutions: here, before
  JAX starts its threads, allocates and reads XLA's flags, so that all that
  follows them.
  """
  try:
    argv = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    # A typo'd --config.KEY raises AttributeError/KeyError from the locked
    # ConfigDict; a bad value TypeError/ValueError.
    detail = (str(e).strip().splitlines() or [''])[-1]
    if isinstance(e, (AttributeError, KeyError)):
      detail = (f'unknown config key {detail} (the keys are in '
                'sgan_jax/config_base.py)')
    sys.exit(f'error: bad flags: {detail}')
  if _KEEP_FREED_MEMORY.value:
    host_memory.keep_freed_memory()
  if _EIGEN_CONVOLUTIONS.value:
    xla_cpu_flags.use_eigen_convolutions()
  return argv


def exit_with(error: BaseException) -> None:
  """Exits non-zero with the error as one line."""
  sys.exit(f'error: {" ".join(str(error).split())}')
