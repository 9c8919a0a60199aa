"""sgan_jax.winograd: the transforms, the convolution and its gradients.

The reference is ``lax.conv_general_dilated`` at HIGHEST precision. Winograd
rounds differently from a direct sum, so outputs and gradients are compared
relative to their scale (the largest magnitude), at 2e-5: a few times a
direct float32 convolution's own error.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from sgan_jax import conv_cpu
from sgan_jax import winograd

_VALID = ((0, 0), (0, 0))
_RTOL_OF_SCALE = 2e-5


def _lax_valid(x, w):
  return lax.conv_general_dilated(
      x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=lax.Precision.HIGHEST)


def _assert_close_to_scale(got, want, msg=''):
  scale = float(np.max(np.abs(want)))
  np.testing.assert_allclose(got, want, rtol=0,
                             atol=_RTOL_OF_SCALE * scale, err_msg=msg)


def _assert_matches(ref, forward, vjp, x, w, key):
  """forward(x, w) and vjp(x, w, dy) against ref's value and VJP."""
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  dy = jax.random.normal(key, y_ref.shape)
  y, (dx, dw) = jax.jit(lambda x, w, dy: (forward(x, w), vjp(x, w, dy)))(
      x, w, dy)
  np.testing.assert_equal(y.shape, y_ref.shape)
  for name, got, want in zip(('y', 'dx', 'dw'), (y, dx, dw),
                             (y_ref, *vjp_ref(dy))):
    _assert_close_to_scale(got, want, name)


# (x shape without batch, kernel side, output channels). The MNIST encoder's
# conv2, CIFAR's, and outputs that are not whole tiles, non-square, k = 3.
_CASES = (
    ('mnist_enc_conv2', (12, 12, 32), 5, 32),
    ('cifar_enc_conv2', (14, 14, 64), 5, 128),
    ('partial_tiles', (13, 14, 16), 5, 16),
    ('k3', (10, 9, 16), 3, 24),
)


class TransformsTest(parameterized.TestCase):

  @parameterized.parameters((4, 3), (4, 5), (2, 3), (2, 5))
  def test_one_axis_identity(self, m, k):
    # A^T [(G g) * (B^T d)] is the correlation of d with g, exactly up to
    # float64 rounding.
    at, g, bt = winograd.transforms(m, k)
    rng = np.random.default_rng(m * 10 + k)
    d, taps = rng.standard_normal(m + k - 1), rng.standard_normal(k)
    want = np.array([d[i:i + k] @ taps for i in range(m)])
    np.testing.assert_allclose(at @ ((g @ taps) * (bt @ d)), want,
                               rtol=1e-10, atol=1e-10)


class CorrelateTest(parameterized.TestCase):

  @parameterized.named_parameters(*_CASES)
  def test_forward_and_vjp_match_lax(self, shape, k, features):
    key_x, key_w, key_dy = jax.random.split(jax.random.key(len(shape) + k), 3)
    x = jax.random.normal(key_x, (3,) + shape)
    w = jax.random.normal(key_w, (k, k, shape[-1], features))
    _assert_matches(_lax_valid, winograd.correlate, winograd.correlate_vjp,
                    x, w, key_dy)

  def test_gradient_of_gradient(self):
    # The VJP is plain jax.numpy, so a loss on the input gradient (a
    # gradient penalty) can be differentiated through conv_cpu.conv.
    # 100 images of 2x2 output tiles: conv_cpu.conv routes them here.
    x = jax.random.normal(jax.random.key(0), (100, 12, 12, 16))
    # Scaled so that tanh is not saturated (its curvature is then tiny and
    # dominated by rounding).
    w = 0.05 * jax.random.normal(jax.random.key(1), (5, 5, 16, 16))

    def penalty(conv, w):
      dx = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x)
      return jnp.sum(dx ** 2)

    self.assertTrue(winograd.applies(x.shape, w.shape, 1, 1, _VALID,
                                     x.dtype))
    fast = lambda x, w: conv_cpu.conv(x, w, 1, 1, _VALID)
    got = jax.jit(jax.grad(lambda w: penalty(fast, w)))(w)
    want = jax.jit(jax.grad(lambda w: penalty(_lax_valid, w)))(w)
    _assert_close_to_scale(got, want)


class CorrelateFullTest(parameterized.TestCase):
  """The stride-1 transposed convolution: x padded by k - 1 all round."""

  @parameterized.named_parameters(
      ('mnist_g0_8to12', (8, 8, 32), 16),
      ('partial_tiles', (9, 11, 16), 24),
  )
  def test_forward_and_vjp_match_lax(self, shape, features):
    k = 5
    full = ((k - 1, k - 1), (k - 1, k - 1))
    key_x, key_w, key_dy = jax.random.split(jax.random.key(shape[0]), 3)
    x = jax.random.normal(key_x, (3,) + shape)
    w = jax.random.normal(key_w, (k, k, shape[-1], features))
    ref = lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), full, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=lax.Precision.HIGHEST)
    _assert_matches(ref, winograd.correlate_full, winograd.correlate_full_vjp,
                    x, w, key_dy)

  def test_routing(self):
    routed = lambda pads: winograd.applies_full(
        (100, 8, 8, 32), (5, 5, 32, 32), 1, 1, pads, jnp.float32)
    self.assertTrue(routed(((4, 4), (4, 4))))  # MNIST G0 8 -> 12
    self.assertFalse(routed(((4, 4), (4, 3))))
    self.assertFalse(routed(((2, 2), (2, 2))))


class AppliesTest(parameterized.TestCase):

  def test_mnist_encoder_conv2(self):
    self.assertTrue(winograd.applies((100, 12, 12, 32), (5, 5, 32, 32), 1, 1,
                                     _VALID, jnp.float32))

  @parameterized.named_parameters(
      ('strided', (100, 12, 12, 32), (5, 5, 32, 32), 2, 1, _VALID),
      ('dilated', (100, 12, 12, 32), (5, 5, 32, 32), 1, 2, _VALID),
      ('padded', (100, 12, 12, 32), (5, 5, 32, 32), 1, 1, ((2, 2), (2, 2))),
      ('few_in_channels', (100, 12, 12, 8), (5, 5, 8, 32), 1, 1, _VALID),
      ('few_out_channels', (100, 12, 12, 32), (5, 5, 32, 1), 1, 1, _VALID),
      ('kernel_7', (100, 12, 12, 32), (7, 7, 32, 32), 1, 1, _VALID),
      ('kernel_3', (100, 12, 12, 32), (3, 3, 32, 32), 1, 1, _VALID),
      ('kernel_1', (100, 12, 12, 32), (1, 1, 32, 32), 1, 1, _VALID),
      ('few_tiles', (99, 12, 12, 32), (5, 5, 32, 32), 1, 1, _VALID),
      ('under_a_tile_a_side', (1000, 7, 12, 32), (5, 5, 32, 32), 1, 1,
       _VALID),
  )
  def test_not_applied(self, x_shape, w_shape, strides, dilation, pads):
    self.assertFalse(winograd.applies(x_shape, w_shape, strides, dilation,
                                      pads, jnp.float32))

  def test_not_applied_to_bfloat16(self):
    # Its transforms would round to bf16; the direct sum accumulates in f32.
    self.assertFalse(winograd.applies((100, 12, 12, 32), (5, 5, 32, 32), 1,
                                      1, _VALID, jnp.bfloat16))


class ShardedTest(parameterized.TestCase):
  """The Winograd routes under a batch-sharded jit (the training steps'
  layout): the reshapes that merge the batch into the tile axis must leave
  the result equal to one device's."""

  @parameterized.named_parameters(
      # Unpadded (encoder conv2), padded by 4 (G0 8 -> 12), transposed
      # stride 2 'SAME' (G0 12 -> 24); 800 images, 100 a device, 400+
      # tiles.
      ('valid', (12, 12, 16), 16, 1, 1, _VALID),
      ('full', (8, 8, 16), 16, 1, 1, ((4, 4), (4, 4))),
      ('transposed', (6, 6, 16), 16, 1, 2, ((3, 2), (3, 2))),
  )
  def test_eight_devices_equal_one(self, shape, features, strides, dilation,
                                   pads):
    devices = jax.devices()
    self.assertLen(devices, 8)  # conftest's fake CPU devices
    x_shape = (800,) + shape
    w_shape = (5, 5, shape[-1], features)
    route = conv_cpu._winograd_route(x_shape, w_shape, strides, dilation,
                                     pads, jnp.float32)
    self.assertIsNotNone(route)
    key_x, key_w, key_dy = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(key_x, x_shape)
    w = jax.random.normal(key_w, w_shape)

    def loss(x, w):
      y = conv_cpu.conv(x, w, strides, dilation, pads)
      return jnp.sum(y * jax.random.normal(key_dy, y.shape)), y

    step = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    want = jax.jit(step)(x, w)
    mesh = jax.sharding.Mesh(np.asarray(devices), ('data',))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
        'data'))
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    sharded = jax.jit(step, in_shardings=(batch, repl)).lower(
        jax.device_put(x, batch), jax.device_put(w, repl)).compile()
    # Each device transforms its own images: the only collective is the
    # kernel gradient's all-reduce, no gathering of activations.
    hlo = sharded.as_text()
    for collective in ('all-gather', 'all-to-all', 'collective-permute'):
      self.assertNotIn(f' {collective}(', hlo)
    got = sharded(jax.device_put(x, batch), jax.device_put(w, repl))
    (_, y), (dx, dw) = got
    self.assertEqual(y.sharding.spec, batch.spec)
    for name, g, r in zip(('y', 'dx', 'dw'), (y, dx, dw),
                          (want[0][1], *want[1])):
      _assert_close_to_scale(g, r, name)


if __name__ == '__main__':
  absltest.main()
