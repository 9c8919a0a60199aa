"""Measures sample quality of a trained SGAN's latest checkpoint.

  python -m sgan_jax.evaluate --workdir=DIR [--num=10000] [--seed=S] \
      [--inception_weights=FILE.npz]

Prints each score of `num` class-balanced samples beside the same score of
real data, and writes `DIR/eval/metrics.json` (plus TensorBoard events under
`DIR/eval/` when clu is importable). The scores use the run's own encoder E
(`e_is`, `e_fid` are domain-classifier analogues of IS/FID, not comparable to
published Inception numbers); see `sgan_jax/evaluation.py` for each key.
With --inception_weights it adds real Inception Score / FID (the FID
InceptionV3 of `sgan_jax/inception.py`; 299 x 299 forwards, about 6 G
multiply-adds (11 GFLOP) per image, so minutes on a CPU).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax

from sgan_jax import cli
from sgan_jax import evaluation

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
_NUM = flags.DEFINE_integer('num', 10000, 'Number of samples (a positive '
                            'multiple of the number of classes).')
_INCEPTION = flags.DEFINE_string(
    'inception_weights', None, 'The FID InceptionV3 (.npz from '
    'python -m sgan_jax.convert_inception) for real Inception IS/FID.')
_SEED = flags.DEFINE_integer('seed', None, 'Sampling seed (default: the '
                             "run's fixed evaluation key).")
_BATCH = flags.DEFINE_integer(
    'batch_size', 1000, 'Images per device call. On CPU 250-2000 is '
    'fastest; much larger calls compile and run slower (see '
    'benchmarks/RESULTS.md).')
flags.mark_flags_as_required(['workdir'])



def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.info('JAX %s, backend %s, %d device(s)', jax.__version__,
               jax.default_backend(), jax.device_count())
  try:
    step, metrics, notes = evaluation.evaluate_workdir(
        _WORKDIR.value, _NUM.value, inception_weights=_INCEPTION.value,
        seed=_SEED.value, batch_size=_BATCH.value)
  except cli.USER_ERRORS as e:
    cli.exit_with(e)
  print(evaluation.format_metrics(step, metrics, notes))
  print('wrote ' + os.path.join(_WORKDIR.value, evaluation.EVAL_DIR,
                                evaluation.METRICS_FILE))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
