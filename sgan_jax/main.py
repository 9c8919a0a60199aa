"""Trains an SGAN: `python -m sgan_jax.main --config=configs/mnist.py:tiny
--workdir=DIR`.

Kept short on purpose: flags and process set-up only; the logic lives in
`train.py`, which tests and notebooks import directly.
"""

import os

# TF (only used by tfds) must never grab accelerator memory JAX needs.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from sgan_jax import cli
from sgan_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/mnist.py or '
    'configs/mnist.py:tiny', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, samples and logs go; an existing '
    'run there is resumed.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for a run over '
    'several processes (then also --num_processes and --process_id).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes of a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process of a multi-process run.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() with '
    'auto-detection (Cloud TPU pod slices, SLURM).')
flags.mark_flags_as_required(['config', 'workdir'])

def init_distributed() -> None:
  """Joins the other processes before anything else touches a device."""
  if _COORDINATOR.value is not None:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise ValueError('--coordinator_address needs --num_processes and '
                       '--process_id (or use --distributed to detect them)')
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


class _QuietOrbax:
  """Drops orbax's per-save INFO chatter from the console (warnings stay)."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietOrbax())
  try:
    init_distributed()
    logging.info('JAX %s, backend %s, %d device(s), process %d of %d',
                 jax.__version__, jax.default_backend(), jax.device_count(),
                 jax.process_index(), jax.process_count())
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except cli.USER_ERRORS as e:
    logging.error('%s: %s', type(e).__name__, e)
    cli.exit_with(e)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
