"""Tests for sgan_jax.datasets: shapes, the unknown-name error, fingerprints."""

import numpy as np
import pytest

from sgan_jax import datasets


@pytest.mark.parametrize(
    'name,shape',
    [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3)),
     ('svhn_cropped', (32, 32, 3))],
)
def test_dataset_info(name, shape):
  assert datasets.dataset_info(name) == (10, shape)


def test_unknown_dataset_raises():
  with pytest.raises(datasets.DataError, match='mnist'):
    datasets.dataset_info('imagenet')


def test_fingerprint_sees_pixels_labels_and_order():
  rs = np.random.default_rng(0)
  arrays = {'image': rs.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8),
            'label': rs.integers(0, 10, 6).astype(np.int32)}
  base = datasets.fingerprint(arrays)
  assert base == datasets.fingerprint(
      {k: v.copy() for k, v in arrays.items()})
  one_pixel = arrays['image'].copy()
  one_pixel[5, 3, 3, 0] ^= 1
  one_label = arrays['label'].copy()
  one_label[0] = (one_label[0] + 1) % 10
  changed = [dict(arrays, image=one_pixel), dict(arrays, label=one_label),
             {k: v[::-1] for k, v in arrays.items()},
             {k: v[:5] for k, v in arrays.items()}]
  digests = {datasets.fingerprint(a) for a in changed}
  assert base not in digests and len(digests) == len(changed)
