"""SGAN loss terms as pure functions over arrays.

No module applies happen here: every function takes logits, features or noise
and returns scalars, so each term can be checked against a closed form. The
weighted sums live in `steps.py`, which logs every term on its own.

Discriminators may have one adversarial logit (the binary D of the original
MNIST code) or K class logits (the "Improved-GAN" D of the original CIFAR code,
where D(x) = sigmoid(logsumexp(logits))). `realness_logit` maps both to one
logit per example, so the adversarial losses below serve either head.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

ADVERSARIAL_KINDS = ('non_saturating', 'saturating', 'hinge', 'least_squares')
CONDITIONAL_KINDS = ('xent', 'mse')


class AdversarialTerms(NamedTuple):
  """All adversarial terms of one D/G pair (means over the batch).

  Attributes:
    d: the discriminator's adversarial loss, 0.5 * (d_real + d_fake), the
      weighting of the original code.
    d_real: loss on real examples.
    d_fake: loss on generated examples.
    g: the generator's adversarial loss.
  """
  d: jax.Array
  d_real: jax.Array
  d_fake: jax.Array
  g: jax.Array


def realness_logit(logits: jax.Array) -> jax.Array:
  """Logit of "x is real" from D's adversarial head.

  Args:
    logits: (B, K) adversarial logits. K = 1 is a plain binary D; K > 1 is the
      K-class D of Salimans et al. with D(x) = Z / (Z + 1), Z = sum exp(l_k).

  Returns:
    (B,) logits; for K = 1 the single logit itself.
  """
  return jax.nn.logsumexp(logits, axis=-1)


def _check_kind(kind: str) -> None:
  if kind not in ADVERSARIAL_KINDS:
    raise ValueError(f'unknown adversarial loss kind {kind!r}; expected one '
                     f'of {ADVERSARIAL_KINDS}')


def generator_adversarial_loss(fake_logits: jax.Array, *,
                               kind: str) -> jax.Array:
  """G's adversarial loss; it depends on D's logits on fakes only.

  Args:
    fake_logits: (B, K) adversarial logits of D on generated examples.
    kind: see `adversarial_losses`.

  Returns:
    Scalar mean over the batch.
  """
  _check_kind(kind)
  f = realness_logit(fake_logits)
  if kind == 'non_saturating':
    return jnp.mean(jax.nn.softplus(-f))      # -log D(G(z))
  if kind == 'saturating':
    return -jnp.mean(jax.nn.softplus(f))      # log(1 - D(G(z)))
  if kind == 'hinge':
    return -jnp.mean(f)
  return jnp.mean(jnp.square(f - 1.0))        # least_squares


def adversarial_losses(real_logits: jax.Array, fake_logits: jax.Array, *,
                       kind: str) -> AdversarialTerms:
  """Adversarial losses of D and G from D's logits on real and fake batches.

  Args:
    real_logits: (B, K) adversarial logits of D on real examples.
    fake_logits: (B', K) adversarial logits of D on generated examples.
    kind: 'non_saturating' (G minimises -log D(G(z)); the original MNIST
      code), 'saturating' (G minimises log(1 - D(G(z))); the original CIFAR
      code), 'hinge' or 'least_squares'.

  Returns:
    AdversarialTerms of scalars.
  """
  _check_kind(kind)
  r = realness_logit(real_logits)
  f = realness_logit(fake_logits)
  if kind in ('non_saturating', 'saturating'):
    # softplus(-r) = -log sigmoid(r); softplus(f) = -log(1 - sigmoid(f)).
    d_real = jnp.mean(jax.nn.softplus(-r))
    d_fake = jnp.mean(jax.nn.softplus(f))
  elif kind == 'hinge':
    d_real = jnp.mean(jax.nn.relu(1.0 - r))
    d_fake = jnp.mean(jax.nn.relu(1.0 + f))
  else:  # least_squares
    d_real = jnp.mean(jnp.square(r - 1.0))
    d_fake = jnp.mean(jnp.square(f))
  return AdversarialTerms(
      d=0.5 * (d_real + d_fake), d_real=d_real, d_fake=d_fake,
      g=generator_adversarial_loss(fake_logits, kind=kind))


def class_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy of K-class logits against integer labels.

  Used by the K-class discriminator on real data and by the encoder.

  Args:
    logits: (B, K) logits.
    labels: (B,) integer labels in [0, K).

  Returns:
    Scalar mean cross-entropy.
  """
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32),
                               axis=-1)
  return -jnp.mean(picked)


def conditional_loss(pred: jax.Array, target: jax.Array, *,
                     kind: str) -> jax.Array:
  """How far E_i(G_i(h_{i+1}, z_i)) is from the condition h_{i+1}.

  Args:
    pred: the encoder's output on generated data: (B, K) logits for 'xent',
      (B, D) features for 'mse'.
    target: (B,) integer labels for 'xent'; (B, D) features for 'mse'.
    kind: 'xent' (label level) or 'mse' (feature level: mean over batch and
      feature dimensions, as the original code averages).

  Returns:
    Scalar loss.
  """
  if kind == 'xent':
    return class_loss(pred, target)
  if kind == 'mse':
    return jnp.mean(jnp.square(pred - target))
  raise ValueError(
      f'unknown conditional loss kind {kind!r}; expected one of '
      f'{CONDITIONAL_KINDS}')


def entropy_loss(z_pred: jax.Array, z: jax.Array) -> jax.Array:
  """Q's regression loss on the noise that produced a sample.

  With a fixed-variance Gaussian posterior Q(z | h), -log Q is this MSE up to
  constants, so minimising it maximises the variational lower bound on the
  conditional entropy H(h_i | h_{i+1}).

  Args:
    z_pred: (B, Z) Q-head prediction.
    z: (B, Z) the noise fed to G.

  Returns:
    Scalar mean over batch and noise dimensions.
  """
  return jnp.mean(jnp.square(z_pred - z))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose argmax equals the label."""
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
