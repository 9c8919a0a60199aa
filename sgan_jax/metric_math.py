"""Sample-quality math over feature arrays: IS, FID, diversity (numpy, float64).

Pure functions of numpy arrays, with no JAX or model in sight, so the
formulas are tested against closed forms on their own. `evaluation` feeds
them the features of samples and of real data.
"""

import numpy as np

# Rows per block of the pairwise-distance matrix: bounds memory at about
# _PAIR_BLOCK * N * 8 bytes whatever the class size.
_PAIR_BLOCK = 1024


def inception_score(probs: np.ndarray, splits: int = 10
                    ) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))), over `splits` chunks: (mean, std).

  The standard protocol (Salimans et al. 2016): p(y) is the marginal of each
  chunk, and the spread over chunks is the reported uncertainty.

  Args:
    probs: (N, K) class probabilities, rows summing to 1.
    splits: number of contiguous chunks; at most N.

  Returns:
    (mean, std) of the per-chunk scores; 1 for uninformative predictions, K
    for confident predictions spread evenly over K classes.
  """
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2 or not 1 <= splits <= len(probs):
    raise ValueError(f'inception_score needs (N, K) probabilities with N >= '
                     f'splits={splits}, got shape {probs.shape}')
  scores = []
  for part in np.array_split(probs, splits):
    marginal = part.mean(axis=0, keepdims=True)
    # 0 * log 0 = 0: confident predictions have exact zeros. Where p > 0 the
    # marginal is > 0 too, so the guarded logs never see 0 where it matters.
    tiny = np.finfo(np.float64).tiny
    kl = np.where(part > 0, part * (np.log(np.maximum(part, tiny))
                                    - np.log(np.maximum(marginal, tiny))),
                  0.0).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean (F,), covariance (F, F)) of (N, ...) features, N - 1 normalised."""
  x = _flat64(features)
  if len(x) < 2:
    raise ValueError(f'a Gaussian fit needs at least 2 examples, got {len(x)}')
  return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the FID formula.

  tr (S1 S2)^(1/2) is computed as tr (S1^(1/2) S2 S1^(1/2))^(1/2) (the same
  eigenvalues): that matrix is symmetric PSD, so `eigh` gives it stably even
  for the singular covariances of fewer examples than dimensions, where
  scipy's sqrtm of the non-symmetric S1 S2 returns complex round-off.

  Args:
    mu1: (F,) mean of the first Gaussian.
    sigma1: (F, F) its covariance.
    mu2: (F,) mean of the second Gaussian.
    sigma2: (F, F) its covariance.

  Returns:
    The squared Frechet (2-Wasserstein) distance, >= 0.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or (
      sigma1.shape != (mu1.size, mu1.size)):
    raise ValueError(f'mismatched Gaussians: means {mu1.shape} {mu2.shape}, '
                     f'covariances {sigma1.shape} {sigma2.shape}')
  root1 = _psd_sqrt(sigma1)
  middle = root1 @ sigma2 @ root1
  eig = np.linalg.eigvalsh((middle + middle.T) / 2)
  tr_cross = np.sqrt(np.clip(eig, 0.0, None)).sum()
  d = (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
       - 2.0 * tr_cross)
  # Exact arithmetic gives d >= 0; only round-off goes below.
  return float(max(d, 0.0))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
  """Frechet distance between Gaussian fits of two (N, ...) feature sets."""
  return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def mean_pairwise_distance(features: np.ndarray) -> float:
  """Mean L2 distance over all pairs i < j of (N, ...) features (N >= 2)."""
  x = _flat64(features)
  n = len(x)
  if n < 2:
    raise ValueError(f'pairwise distances need at least 2 examples, got {n}')
  # Distances do not change under translation; centering first keeps the
  # |a|^2 + |b|^2 - 2ab expansion accurate and makes identical rows exactly 0.
  x = x - x.mean(axis=0)
  sq = np.einsum('ij,ij->i', x, x)
  total = 0.0
  for s in range(0, n, _PAIR_BLOCK):
    block = x[s:s + _PAIR_BLOCK]
    d2 = sq[s:s + _PAIR_BLOCK, None] + sq[None, :] - 2.0 * block @ x.T
    # The diagonal (i == i) is round-off; zero it rather than trust it.
    rows = np.arange(len(block))
    d2[rows, s + rows] = 0.0
    total += np.sqrt(np.clip(d2, 0.0, None)).sum()
  return float(total / (n * (n - 1)))


def class_diversity(features: np.ndarray, labels: np.ndarray) -> float:
  """`mean_pairwise_distance` within each class, averaged over classes.

  Classes with fewer than 2 examples have no pairs and are skipped; NaN if
  no class has 2.

  Args:
    features: (N, ...) features (cast to float64 one class at a time, so a
      uint8 image array is fine).
    labels: (N,) int class of each example.

  Returns:
    The unweighted mean over classes.
  """
  labels = np.asarray(labels)
  if len(labels) != len(features):
    raise ValueError(f'{len(features)} features but {len(labels)} labels')
  per_class = [mean_pairwise_distance(features[labels == c])
               for c in np.unique(labels) if np.sum(labels == c) >= 2]
  return float(np.mean(per_class)) if per_class else float('nan')


def _flat64(features: np.ndarray) -> np.ndarray:
  x = np.asarray(features, np.float64)
  return x.reshape(len(x), -1)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  eig, vec = np.linalg.eigh((sigma + sigma.T) / 2)
  return (vec * np.sqrt(np.clip(eig, 0.0, None))) @ vec.T


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of rows of (N, K) `probs` whose argmax is the (N,) label."""
  return float(np.mean(np.argmax(probs, -1) == labels))


def ratio(a: float, b: float) -> float:
  """a / b, NaN where the reference b is not positive."""
  return a / b if b > 0 else float('nan')
