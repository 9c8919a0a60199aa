"""Tests for sgan_jax.metric_math: closed forms of IS, FID and diversity."""

import numpy as np
import pytest
from scipy.spatial import distance

from sgan_jax import metric_math


def test_inception_score_of_uniform_predictions_is_one():
  mean, std = metric_math.inception_score(np.full((100, 10), 0.1), splits=10)
  assert mean == pytest.approx(1.0, abs=1e-12)
  assert std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('k', [2, 10])
def test_inception_score_of_confident_spread_predictions_is_k(k):
  # Class n mod k: every split sees every class equally often.
  probs = np.eye(k)[np.arange(50 * k) % k]
  mean, std = metric_math.inception_score(probs, splits=10)
  assert mean == pytest.approx(k, rel=1e-12)
  assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_of_one_confident_class_is_one():
  # Confident but always the same class: no diversity, score 1.
  mean, _ = metric_math.inception_score(np.eye(10)[np.zeros(40, int)], 4)
  assert mean == pytest.approx(1.0)


def test_inception_score_rejects_too_few_examples():
  with pytest.raises(ValueError, match='splits'):
    metric_math.inception_score(np.full((5, 10), 0.1), splits=10)


def test_fid_of_identical_sets_is_zero():
  x = np.random.default_rng(0).normal(size=(500, 16))
  assert metric_math.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_with_fewer_examples_than_dimensions_is_finite_and_zero():
  # Singular covariances: the eigh-based square root must still work.
  x = np.random.default_rng(1).normal(size=(10, 64))
  assert metric_math.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
  y = np.random.default_rng(2).normal(size=(10, 64))
  assert np.isfinite(metric_math.fid_from_features(x, y))


def test_fid_is_symmetric():
  r = np.random.default_rng(3)
  a = r.normal(size=(400, 8))
  b = r.normal(size=(300, 8)) @ r.normal(size=(8, 8)) + 1.0
  ab, ba = metric_math.fid_from_features(a, b), metric_math.fid_from_features(
      b, a)
  assert ab > 1.0
  assert ab == pytest.approx(ba, rel=1e-9)


def test_fid_of_shifted_gaussian_is_squared_shift():
  r = np.random.default_rng(4)
  shift = np.array([0.5, -1.0, 2.0, 0.0])
  a = r.normal(size=(20000, 4))
  # The same sample shifted: equal covariances, so exactly |shift|^2.
  assert metric_math.fid_from_features(a, a + shift) == pytest.approx(
      np.sum(shift ** 2), rel=1e-9)
  # An independent sample: |shift|^2 up to sampling noise.
  b = r.normal(size=(20000, 4)) + shift
  assert metric_math.fid_from_features(a, b) == pytest.approx(
      np.sum(shift ** 2), abs=0.05)


def test_frechet_distance_closed_form_for_scaled_covariance():
  # N(0, I) vs N(0, 4I) in d dims: d + 4d - 2 * 2d = d.
  d = 5
  assert metric_math.frechet_distance(
      np.zeros(d), np.eye(d), np.zeros(d), 4 * np.eye(d)) == pytest.approx(d)


def test_mean_pairwise_distance_matches_brute_force():
  # More rows than one block of the blocked computation.
  x = np.random.default_rng(5).normal(size=(1100, 3)) + 100.0
  assert metric_math.mean_pairwise_distance(x) == pytest.approx(
      distance.pdist(x).mean(), rel=1e-9)


def test_diversity_of_identical_samples_is_zero():
  x = np.tile(np.random.default_rng(6).normal(size=(1, 7)), (20, 1))
  assert metric_math.mean_pairwise_distance(x) == 0.0
  labels = np.arange(20) % 4
  assert metric_math.class_diversity(x, labels) == 0.0


def test_class_diversity_averages_within_class_distances():
  # Class 0: points 0 and 2 apart; class 1: 0, 1, 1 (mean 2/3); class 2: a
  # singleton, skipped. Pairs across classes never count.
  features = np.array([[0.], [2.], [10.], [11.], [11.], [50.]])
  labels = np.array([0, 0, 1, 1, 1, 2])
  assert metric_math.class_diversity(features, labels) == pytest.approx(
      (2.0 + 2.0 / 3.0) / 2.0)
  # uint8 input is cast, not wrapped around.
  images = np.array([[0], [255]], np.uint8)
  assert metric_math.class_diversity(images, np.zeros(2)) == 255.0
