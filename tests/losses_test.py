"""Closed-form checks of the SGAN loss terms, jitted and not."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from sgan_jax import losses

LOG2 = float(np.log(2.0))


class AdversarialLossesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('non_saturating', 'non_saturating'), ('saturating', 'saturating'))
  def test_chance_level_values(self, kind):
    # D(x) = 1/2 everywhere: every cross-entropy term is log 2.
    fn = self.variant(lambda r, f: losses.adversarial_losses(r, f, kind=kind))
    t = fn(jnp.zeros((4, 1)), jnp.zeros((6, 1)))
    np.testing.assert_allclose(t.d_real, LOG2, rtol=1e-6)
    np.testing.assert_allclose(t.d_fake, LOG2, rtol=1e-6)
    np.testing.assert_allclose(t.d, LOG2, rtol=1e-6)
    expected_g = LOG2 if kind == 'non_saturating' else -LOG2
    np.testing.assert_allclose(t.g, expected_g, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_binary_values_match_sigmoid_cross_entropy(self):
    r = jnp.array([[2.0], [-1.0], [0.5]])
    f = jnp.array([[-3.0], [0.25]])
    t = self.variant(lambda r, f: losses.adversarial_losses(
        r, f, kind='non_saturating'))(r, f)
    sig = jax.nn.sigmoid
    np.testing.assert_allclose(t.d_real, -jnp.mean(jnp.log(sig(r))),
                               rtol=1e-5)
    np.testing.assert_allclose(t.d_fake, -jnp.mean(jnp.log(1 - sig(f))),
                               rtol=1e-5)
    np.testing.assert_allclose(t.g, -jnp.mean(jnp.log(sig(f))), rtol=1e-5)
    np.testing.assert_allclose(t.d, 0.5 * (t.d_real + t.d_fake), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_k_class_realness_is_logsumexp(self):
    # Improved-GAN D: D(x) = Z / (Z + 1) with Z = sum_k exp(l_k).
    logits = jnp.log(jnp.array([[1.0, 2.0, 1.0]]))  # Z = 4 -> D = 0.8
    t = self.variant(lambda r, f: losses.adversarial_losses(
        r, f, kind='saturating'))(logits, logits)
    np.testing.assert_allclose(t.d_real, -np.log(0.8), rtol=1e-5)
    np.testing.assert_allclose(t.d_fake, -np.log(0.2), rtol=1e-5)
    np.testing.assert_allclose(t.g, np.log(0.2), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_hinge_and_least_squares(self):
    r, f = jnp.array([[0.5], [2.0]]), jnp.array([[-2.0], [0.0]])
    h = self.variant(lambda r, f: losses.adversarial_losses(
        r, f, kind='hinge'))(r, f)
    np.testing.assert_allclose(h.d_real, (0.5 + 0.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(h.d_fake, (0.0 + 1.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(h.g, 1.0, rtol=1e-6)
    ls = self.variant(lambda r, f: losses.adversarial_losses(
        r, f, kind='least_squares'))(r, f)
    np.testing.assert_allclose(ls.d_real, (0.25 + 1.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(ls.d_fake, (4.0 + 0.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(ls.g, (9.0 + 1.0) / 2, rtol=1e-6)

  @parameterized.parameters(*losses.ADVERSARIAL_KINDS)
  def test_gradient_directions(self, kind):
    # D's loss falls by raising real logits and lowering fake ones; G's
    # falls by raising the fake logits.
    r, f = jnp.full((3, 1), 0.1), jnp.full((3, 1), 0.1)
    d_r, d_f = jax.grad(lambda r, f: losses.adversarial_losses(
        r, f, kind=kind).d, argnums=(0, 1))(r, f)
    g_f = jax.grad(lambda f: losses.generator_adversarial_loss(
        f, kind=kind))(f)
    self.assertTrue(jnp.all(d_r < 0))
    self.assertTrue(jnp.all(d_f > 0))
    self.assertTrue(jnp.all(g_f < 0))

  @parameterized.parameters(*losses.ADVERSARIAL_KINDS)
  def test_finite_for_extreme_logits(self, kind):
    big = jnp.array([[1e4], [-1e4]])
    t = losses.adversarial_losses(big, big, kind=kind)
    chex.assert_tree_all_finite(t)
    chex.assert_tree_all_finite(jax.grad(
        lambda x: losses.adversarial_losses(x, x, kind=kind).d)(big))
    chex.assert_shape(list(t), ())

  def test_unknown_kind(self):
    with self.assertRaisesRegex(ValueError, 'wasserstein'):
      losses.adversarial_losses(jnp.zeros((1, 1)), jnp.zeros((1, 1)),
                                kind='wasserstein')


class ConditionalAndEntropyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_xent_of_uniform_logits_is_log_k(self):
    fn = self.variant(lambda p, y: losses.conditional_loss(p, y, kind='xent'))
    np.testing.assert_allclose(
        fn(jnp.zeros((5, 10)), jnp.arange(5)), np.log(10.0), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_xent_picks_the_label(self):
    logits = jnp.array([[0.0, 5.0], [3.0, 0.0]])
    got = self.variant(lambda p, y: losses.conditional_loss(
        p, y, kind='xent'))(logits, jnp.array([1, 0]))
    expected = np.mean([np.log1p(np.exp(-5.0)), np.log1p(np.exp(-3.0))])
    np.testing.assert_allclose(got, expected, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mse_averages_over_batch_and_features(self):
    pred, target = jnp.ones((2, 4)), jnp.zeros((2, 4))
    pred = pred.at[0, 0].set(3.0)   # squared errors: 9 + 7 * 1
    got = self.variant(lambda p, t: losses.conditional_loss(
        p, t, kind='mse'))(pred, target)
    np.testing.assert_allclose(got, 16.0 / 8.0, rtol=1e-6)

  def test_mse_gradient_points_to_target(self):
    pred, target = jnp.array([[1.0, -1.0]]), jnp.zeros((1, 2))
    g = jax.grad(lambda p: losses.conditional_loss(p, target, kind='mse'))(
        pred)
    np.testing.assert_allclose(g, pred, rtol=1e-6)  # d/dp mean((p-t)^2)

  def test_unknown_conditional_kind(self):
    with self.assertRaisesRegex(ValueError, 'l1'):
      losses.conditional_loss(jnp.zeros((1, 1)), jnp.zeros((1, 1)), kind='l1')

  @chex.variants(with_jit=True, without_jit=True)
  def test_entropy_of_mean_prediction_is_uniform_variance(self):
    # Q predicting E[z] = 1/2 for z ~ U[0, 1) scores Var(z) = 1/12.
    z = jax.random.uniform(jax.random.key(0), (4096, 50))
    got = self.variant(losses.entropy_loss)(jnp.full_like(z, 0.5), z)
    np.testing.assert_allclose(got, 1.0 / 12.0, rtol=0.02)
    self.assertEqual(float(losses.entropy_loss(z, z)), 0.0)

  def test_class_loss_and_accuracy(self):
    logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = jnp.array([0, 1, 1])
    np.testing.assert_allclose(losses.accuracy(logits, labels), 2 / 3)
    manual = -np.mean([np.log(jax.nn.softmax(logits[k])[labels[k]])
                       for k in range(3)])
    np.testing.assert_allclose(losses.class_loss(logits, labels), manual,
                               rtol=1e-5)


if __name__ == '__main__':
  absltest.main()
