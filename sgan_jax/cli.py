"""What the command-line entry points share: flag parsing, the host
allocator setting, and bad input reported as one `error:` line instead of a
traceback."""

import sys

from absl import flags

from sgan_jax import host_memory
from sgan_jax import input_pipeline

_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Keep memory the process frees mapped for '
    'reuse (glibc mallopt; see sgan_jax/host_memory.py): XLA:CPU steps then '
    'stop page-faulting their buffers in afresh. The resident size stays at '
    'its peak.')

# Errors that mean "bad input" (or a diverged run).
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError,
               NotImplementedError, input_pipeline.DataError)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config-override errors as one line.

  Also applies --keep_freed_memory: here, before JAX starts its threads and
  allocates, so that every later allocation follows it.
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
  return argv


def exit_with(error: BaseException) -> None:
  """Exits non-zero with the error as one line."""
  sys.exit(f'error: {" ".join(str(error).split())}')
