"""What the command-line entry points share: flag parsing, the host
allocator, XLA:CPU settings and the compilation cache, and bad input reported
as one `error:` line instead of a traceback."""

import os
import sys

from absl import flags
from jax.experimental.compilation_cache import compilation_cache

from sgan_jax import checkpointing
from sgan_jax import datasets
from sgan_jax import host_memory
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
_CPU_ASYNC_DISPATCH = flags.DEFINE_bool(
    'cpu_async_dispatch', False, "JAX's asynchronous dispatch of "
    'single-device CPU steps. Off: each step runs on the calling thread, '
    'and its buffers come from the heap that --keep_freed_memory keeps '
    'mapped instead of being mapped afresh per step (MNIST stack 0 ~15 % '
    'faster; see sgan_jax/xla_cpu_flags.py). No effect on GPU/TPU.')
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None, 'Where JAX keeps compiled steps between '
    'runs (its persistent compilation cache; a local path or gs://...): a '
    'rerun or resume of the same config and flags loads its steps instead of '
    'compiling them. Default: $JAX_COMPILATION_CACHE_DIR, else '
    '$XDG_CACHE_HOME/sgan_jax/xla (~/.cache/...); "" turns it off.')

# Errors that mean "bad input" (or a diverged run).
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError,
               NotImplementedError, datasets.DataError,
               checkpointing.RestoreError)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config-override errors as one line.

  Also applies --keep_freed_memory, --eigen_convolutions and
  --cpu_async_dispatch: here, before JAX starts its threads, allocates,
  reads XLA's flags and creates its CPU client, so that all that follows
  them.
  """
  try:
    argv = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    # A typo'd --config.KEY raises AttributeError/KeyError from the locked
    # ConfigDict; a bad value TypeError/ValueError.
    detail = (str(e).strip().splitlines() or [''])[-1]
    if isinstance(e, (AttributeError, KeyError)):
      detail = (f'unknown config key {_config_key_detail(e) or detail} (the '
                'keys are in sgan_jax/config_base.py)')
    sys.exit(f'error: bad flags: {detail}')
  if _KEEP_FREED_MEMORY.value:
    host_memory.keep_freed_memory()
  if _EIGEN_CONVOLUTIONS.value:
    xla_cpu_flags.use_eigen_convolutions()
  if not _CPU_ASYNC_DISPATCH.value:
    xla_cpu_flags.run_steps_on_calling_thread()
  use_compilation_cache(_COMPILATION_CACHE_DIR.value)
  return argv


def _config_key_detail(error: BaseException) -> str | None:
  """The locked ConfigDict's own message ("'x' Did you mean "y"...?").

  ml_collections raises it as a KeyError and re-raises its repr (quotes and
  newline escaped) as an AttributeError; the original is in the context.
  """
  messages = []
  while error is not None:
    if isinstance(error, KeyError) and error.args and isinstance(
        error.args[0], str):
      messages.append(error.args[0])
    error = error.__context__
  hints = [m for m in messages if 'Did you mean' in m] or messages
  return ' '.join(hints[0].split()) if hints else None


def default_compilation_cache_dir() -> str:
  """$JAX_COMPILATION_CACHE_DIR, else the user's cache folder."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'sgan_jax', 'xla')


def use_compilation_cache(path: str | None) -> str | None:
  """Points JAX's persistent compilation cache at `path` for this process.

  Must run before the first compile: JAX opens the cache once. The cache key
  holds the computation, the XLA flags, the JAX version and the devices, so
  a changed config, flag or machine compiles afresh rather than loading a
  wrong executable.

  Args:
    path: the folder; None: `default_compilation_cache_dir()`; '': no cache.

  Returns:
    The folder in use, or None when the cache is off.
  """
  if path is None:
    path = default_compilation_cache_dir()
  path = os.path.expanduser(path) if path else None
  compilation_cache.set_cache_dir(path)
  return path


def exit_with(error: BaseException) -> None:
  """Exits non-zero with the error as one line."""
  sys.exit(f'error: {" ".join(str(error).split())}')
