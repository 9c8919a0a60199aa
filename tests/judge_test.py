"""The independent classifier behind judge_cond_acc."""

import json
import os

import numpy as np

import helpers
from sgan_jax import judge
from sgan_jax import sharding


def _separable(n, seed=0):
  """A bright square whose position is the class: learnable in a few steps."""
  r = np.random.default_rng(seed)
  labels = (np.arange(n) % 10).astype(np.int32)
  images = r.integers(0, 30, (n, 28, 28, 1)).astype(np.uint8)
  for i, c in enumerate(labels):
    y, x = (c // 5) * 14 + 4, (c % 5) * 5 + 1
    images[i, y:y + 6, x:x + 5] = 255
  return {'image': images, 'label': labels}


def test_judge_learns_caches_and_is_not_the_encoder(tmp_path):
  config = helpers.load_config('mnist')
  config.data.batch_size = 16
  train = _separable(200)
  test = _separable(100, seed=1)
  mesh = sharding.make_mesh()
  first = judge.Judge(config, mesh, train, cache_dir=str(tmp_path),
                      num_steps=80, batch_size=48)
  feats, probs = first(test['image'])
  # fc3 is 256 wide, times the tiny preset's width multiplier.
  assert feats.shape == (100, int(256 * config.model.width))
  assert probs.shape == (100, 10)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  assert np.mean(probs.argmax(-1) == test['label']) > 0.5
  assert os.path.exists(tmp_path / judge.JUDGE_FILE)
  # A second judge loads the cache instead of training: same outputs.
  again = judge.Judge(config, mesh, train, cache_dir=str(tmp_path),
                      num_steps=80, batch_size=48)
  feats_again, probs_again = again(test['image'])
  np.testing.assert_allclose(probs_again, probs, rtol=1e-6)
  np.testing.assert_allclose(feats_again, feats, rtol=1e-6)
  # A judge of another recipe (here: more steps) does not take that cache.
  longer = judge.Judge(config, mesh, train, cache_dir=str(tmp_path),
                       num_steps=90, batch_size=48)
  _, probs_longer = longer(test['image'])
  assert not np.allclose(probs_longer, probs, rtol=1e-6)
  assert json.loads((tmp_path / judge.RECIPE_FILE).read_text())['steps'] == 90
  # E's settings and the examples (not only their number) are in the recipe.
  flipped = helpers.load_config('mnist')
  flipped.data.batch_size = 16
  flipped.encoder.random_flip = True
  reordered = {k: v[::-1] for k, v in train.items()}
  for c, data in ((flipped, train), (config, reordered)):
    assert judge.Judge(c, mesh, data, cache_dir=str(tmp_path), num_steps=90,
                       batch_size=48).recipe != longer.recipe
  # Its initialisation differs from the run's encoder (another seed).
  _, st = helpers.build(config)
  fresh = first._fresh_state()
  assert not helpers.tree_equal(fresh.encoder.params, st.encoder.params)
