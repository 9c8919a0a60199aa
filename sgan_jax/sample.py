"""Writes samples and figures of a trained SGAN.

  python -m sgan_jax.sample --workdir=DIR --num=1000 --out=samples.npz \
      [--grid=grid.png] [--fixed_h1_grid=f.png] [--interpolation_grid=i.png] \
      [--neighbours_grid=n.png] [--seed=0]

--out: an npz with `images` uint8 (N, H, W, C) in [0, 255] and `labels`
  int32 (N,), the conditioning class of each image, N/num_classes per class.
--grid: the class-conditional grid, one row per class, --columns samples each.
--fixed_h1_grid: one generated ĥ_1 per row (classes in order), z_0 varying
  along the row (paper Fig. 4c/5): what the pixel-level noise controls.
--interpolation_grid: one class per row, z_`--interpolate_stack` (default 1)
  interpolated linearly from one draw to another, all other noise fixed.
--neighbours_grid: one sample per class, then its --neighbours nearest
  training images by pixels, then by E's fc3 features (paper Fig. 4b).
At least one output is required. All of them use the run's fixed evaluation
key (or --seed), so reruns show the same draws.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import numpy as np

from sgan_jax import atomic_file
from sgan_jax import cli
from sgan_jax import datasets
from sgan_jax import evaluation
from sgan_jax import figures
from sgan_jax import input_pipeline
from sgan_jax import jitted
from sgan_jax import rng
from sgan_jax import runs
from sgan_jax import sampling
from sgan_jax import sharding
from sgan_jax import steps

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
_NUM = flags.DEFINE_integer('num', 1000, 'Number of samples in --out (a '
                            'multiple of the number of classes).')
_OUT = flags.DEFINE_string('out', None, 'Output .npz path.')
_GRID = flags.DEFINE_string('grid', None, 'Class-conditional PNG grid (one '
                            'row per class, --columns columns).')
_FIXED = flags.DEFINE_string('fixed_h1_grid', None, 'PNG: a fixed ĥ_1 per '
                             'row, z_0 varying along it.')
_INTERP = flags.DEFINE_string('interpolation_grid', None, 'PNG: linear '
                              'interpolation of one z per row.')
_INTERP_STACK = flags.DEFINE_integer('interpolate_stack', 1, 'Stack whose z '
                                     'the interpolation grid varies.')
_NEIGHBOURS_GRID = flags.DEFINE_string(
    'neighbours_grid', None, 'PNG: samples beside their nearest training '
    'images (reads the training split).')
_NEIGHBOURS = flags.DEFINE_integer('neighbours', 5, 'Neighbours of each '
                                   'kind in --neighbours_grid.')
_COLUMNS = flags.DEFINE_integer('columns', 10, 'Columns of the figure grids.')
_SEED = flags.DEFINE_integer('seed', None, 'Sampling seed (default: the '
                             "run's fixed evaluation key).")
_BATCH = flags.DEFINE_integer(
    'batch_size', 1000, 'Samples per device call. On CPU 250-2000 is '
    'fastest; much larger calls compile and run slower (see '
    'benchmarks/RESULTS.md).')
flags.mark_flags_as_required(['workdir'])

_OUTPUTS = (_OUT, _GRID, _FIXED, _INTERP, _NEIGHBOURS_GRID)


def _check_flags():
  if not any(f.value for f in _OUTPUTS):
    raise ValueError('nothing to write: give --out and/or one of --grid, '
                     '--fixed_h1_grid, --interpolation_grid, '
                     '--neighbours_grid')
  for flag in (_BATCH, _COLUMNS, _NEIGHBOURS):
    if flag.value <= 0:
      raise ValueError(f'--{flag.name} must be positive, got {flag.value}')
  if _INTERP.value and _COLUMNS.value < 2:
    raise ValueError('--interpolation_grid needs --columns >= 2')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    _check_flags()
    config = runs.load_config(_WORKDIR.value)
    num_classes, _ = datasets.dataset_info(config.data.name)
    if _OUT.value:
      labels = sampling.balanced_labels(_NUM.value, num_classes)
    models, st, mesh, config = runs.restore_latest(_WORKDIR.value)
    if _INTERP.value and not 0 <= _INTERP_STACK.value < models.num_stacks:
      raise ValueError(f'--interpolate_stack must be in 0..'
                       f'{models.num_stacks - 1}, got {_INTERP_STACK.value}')
    train = (input_pipeline.load_split(config.data, 'train')[0]
             if _NEIGHBOURS_GRID.value else None)
  except cli.USER_ERRORS as e:
    cli.exit_with(e)
  # Sampling BN statistics of the EMA generator (log.bn_calibration_num).
  st = sampling.BatchStatsCalibrator(models, config, mesh)(st)
  seed = config.seed if _SEED.value is None else _SEED.value
  key = rng.eval_key(jax.random.key(seed))
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  n_dev = mesh.devices.size
  sample_fn = jitted.jit_sample(models, mesh)

  def draw(labels):
    batch = -(-min(_BATCH.value, len(labels)) // n_dev) * n_dev
    return sampling.generate(sample_fn, st, labels, key, batch_size=batch,
                             sharding=batch_sh)

  written = []
  if _OUT.value:
    # np.savez appends .npz to a name without it; report the real name.
    out = (_OUT.value if _OUT.value.endswith('.npz')
           else f'{_OUT.value}.npz')
    images = draw(labels)
    with atomic_file.open_for_write(out, binary=True) as f:
      np.savez(f, images=images, labels=labels)
    logging.info('wrote %d samples from step %d to %s', len(labels),
                 int(st.step), out)
    written.append(f'{len(labels)} samples to {out}')
  rows, cols = models.num_classes, _COLUMNS.value
  if _GRID.value:
    images = draw(sampling.grid_labels(num_classes, cols))
    sampling.save_png(_GRID.value, sampling.image_grid(images, rows))
    written.append(_GRID.value)
  decode = jax.jit(sampling.make_decode_fn(models))
  if _FIXED.value:
    images = figures.fixed_condition_grid(decode, st, models, key, rows, cols)
    sampling.save_png(_FIXED.value, sampling.image_grid(images, rows))
    written.append(_FIXED.value)
  if _INTERP.value:
    images = figures.interpolation_grid(decode, st, models, key, rows, cols,
                                        stack=_INTERP_STACK.value)
    sampling.save_png(_INTERP.value, sampling.image_grid(images, rows))
    written.append(_INTERP.value)
  if _NEIGHBOURS_GRID.value:
    features = jax.jit(evaluation.make_encoder_features(
        models, steps.StepConfig.from_config(config)),
                       in_shardings=(repl, batch_sh),
                       out_shardings=(batch_sh, batch_sh))
    batch = -(-min(_BATCH.value, 1000) // n_dev) * n_dev
    samples = draw(sampling.grid_labels(num_classes, 1))
    sample_fc3, _ = evaluation.encode_images(features, st, samples, batch,
                                             batch_sh)
    train_fc3, _ = evaluation.encode_images(features, st, train['image'],
                                            batch, batch_sh)
    tiles, columns = figures.nearest_neighbours_grid(
        samples, sample_fc3, train['image'], train_fc3, _NEIGHBOURS.value)
    sampling.save_png(_NEIGHBOURS_GRID.value,
                      sampling.image_grid(tiles, len(tiles) // columns))
    written.append(_NEIGHBOURS_GRID.value)
  print('wrote ' + ', '.join(written))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
