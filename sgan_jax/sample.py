"""Writes samples of a trained SGAN to an .npz file (and optionally a PNG).

  python -m sgan_jax.sample --workdir=DIR --num=1000 --out=samples.npz \
      [--grid=grid.png] [--seed=0]

The npz holds `images` uint8 (N, H, W, C) in [0, 255] and `labels` int32 (N,),
the conditioning class of each image, N/num_classes per class.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import numpy as np

from sgan_jax import rng
from sgan_jax import runs
from sgan_jax import sampling
from sgan_jax import sharding

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
_NUM = flags.DEFINE_integer('num', 1000, 'Number of samples (a multiple of '
                            'the number of classes).')
_OUT = flags.DEFINE_string('out', None, 'Output .npz path.')
_GRID = flags.DEFINE_string('grid', None, 'Optional PNG grid (one row per '
                            'class, up to 10 columns).')
_SEED = flags.DEFINE_integer('seed', None, 'Sampling seed (default: the '
                             "run's fixed evaluation key).")
_BATCH = flags.DEFINE_integer('batch_size', 1000, 'Samples per device call.')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    models, st, mesh, config = runs.restore_latest(_WORKDIR.value)
    labels = sampling.balanced_labels(_NUM.value, models.num_classes)
    if _BATCH.value <= 0:
      raise ValueError(f'--batch_size must be positive, got {_BATCH.value}')
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  seed = config.seed if _SEED.value is None else _SEED.value
  key = rng.eval_key(jax.random.key(seed))
  batch = -(-min(_BATCH.value, len(labels)) // mesh.devices.size) * (
      mesh.devices.size)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  sample_fn = jax.jit(sampling.make_sample_fn(models),
                      in_shardings=(repl, batch_sh, batch_sh, repl),
                      out_shardings=batch_sh)
  images = sampling.generate(sample_fn, st, labels, key, batch_size=batch,
                             sharding=batch_sh)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  np.savez(_OUT.value, images=images, labels=labels)
  logging.info('wrote %d samples from step %d to %s', len(labels),
               int(st.step), _OUT.value)
  if _GRID.value:
    per_class = min(10, len(labels) // models.num_classes)
    grid_lab = sampling.grid_labels(models.num_classes, per_class)
    grid_images = sampling.generate(sample_fn, st, grid_lab, key,
                                    batch_size=batch, sharding=batch_sh)
    sampling.save_png(_GRID.value,
                      sampling.image_grid(grid_images, models.num_classes))
  print(f'wrote {len(labels)} samples to {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
