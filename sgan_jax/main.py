"""Trains an SGAN: `python -m sgan_jax.main --config=configs/mnist.py:tiny
--workdir=DIR`.

Kept short on purpose: flags and process set-up only; the logic lives in
`train.py`, which tests and notebooks import directly.
"""

import os
import sys

# TF (only used by tfds) must never grab accelerator memory JAX needs.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from sgan_jax import input_pipeline
from sgan_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/mnist.py or configs/mnist.py:tiny',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, samples and logs go; an existing '
    'run there is resumed.')
flags.mark_flags_as_required(['config', 'workdir'])

# Errors that mean "bad input", reported as one line instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, input_pipeline.DataError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.info('JAX %s, backend %s, %d device(s)', jax.__version__,
               jax.default_backend(), jax.device_count())
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except USER_ERRORS as e:
    logging.error('%s: %s', type(e).__name__, e)
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
