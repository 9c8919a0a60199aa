"""sgan_jax.layers against flax.linen.Conv / ConvTranspose.

Every (transposed) convolution shape of the MNIST and CIFAR networks, at a
small batch and with fewer channels, must give the Flax layer's parameters,
outputs and gradients under every ``impl``.
"""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sgan_jax import conv_cpu
from sgan_jax import layers

# (name, input HWC, features, kernel, strides, padding).
_CONV_TRANSPOSE_CASES = (
    # MNIST G0: 4 -> 8 -> 12 -> 24 -> 28.
    ('g0_4to8_s2_same', (4, 4, 16), 16, 5, 2, 'SAME'),
    ('g0_8to12_s1_valid', (8, 8, 16), 8, 5, 1, 'VALID'),
    ('g0_12to24_s2_same', (12, 12, 8), 8, 5, 2, 'SAME'),
    ('g0_24to28_s1_valid', (24, 24, 8), 1, 5, 1, 'VALID'),
    # CIFAR G0: 5 -> 10 -> 14 -> 28 -> 32.
    ('cifar_5to10_s2_same', (5, 5, 8), 8, 5, 2, 'SAME'),
    ('cifar_10to14_s1_valid', (10, 10, 8), 4, 5, 1, 'VALID'),
    ('cifar_14to28_s2_same', (14, 14, 4), 4, 5, 2, 'SAME'),
    ('cifar_28to32_s1_valid', (28, 28, 4), 3, 5, 1, 'VALID'),
    # Beyond the networks: the general sub-pixel and padding arithmetic.
    ('s2_valid', (5, 5, 4), 4, 5, 2, 'VALID'),
    ('s2_even_kernel', (5, 5, 4), 4, 4, 2, 'SAME'),
    ('s3_same', (4, 5, 3), 4, 3, 3, 'SAME'),
    ('s2_int_pad', (6, 6, 4), 3, 5, 2, 2),
    ('s1_int_pad', (6, 6, 4), 3, 3, 1, 1),
)

_CONV_CASES = (
    # MNIST D0: 28 -> 14 -> 7 -> 4 with 5x5, stride 2, pad 2.
    ('d0_28to14', (28, 28, 1), 8, 5, 2, 2),
    ('d0_14to7', (14, 14, 8), 8, 5, 2, 2),
    ('d0_7to4', (7, 7, 8), 16, 5, 2, 2),
    # MNIST encoder: 5x5 VALID.
    ('enc_28to24', (28, 28, 1), 8, 5, 1, 'VALID'),
    ('enc_12to8', (12, 12, 8), 8, 5, 1, 'VALID'),
    # CIFAR D: 3x3 pad 1 stride 1 and 2, pad 0, NIN 1x1.
    ('cifar_3x3_pad1', (32, 32, 3), 8, 3, 1, 1),
    ('cifar_3x3_pad1_s2', (32, 32, 8), 8, 3, 2, 1),
    ('cifar_3x3_pad0', (8, 8, 8), 8, 3, 1, 0),
    ('nin_1x1', (6, 6, 8), 4, 1, 1, 'VALID'),
    # Beyond the networks: SAME with strides, unread input rows.
    ('same_s2_odd', (9, 7, 4), 4, 3, 2, 'SAME'),
    ('same_s3', (8, 8, 4), 4, 4, 3, 'SAME'),
    ('valid_s2_unread_row', (8, 8, 4), 4, 3, 2, 'VALID'),
)

_BATCH = 2
# 'auto' is 'fast' on the CPU that tests run on; ResolveImplTest covers it.
_IMPLS = ('xla', 'fast')


def _layers(kind, features, kernel, strides, padding, **kwargs):
  """(flax reference, sgan_jax layer factory taking impl)."""
  if kind == 'conv':
    ref = nn.Conv(features, (kernel, kernel), strides=strides,
                  padding=padding, **kwargs)
    make = lambda impl: layers.Conv(features, kernel, strides, padding,
                                    impl=impl, **kwargs)
  else:
    ref = nn.ConvTranspose(features, (kernel, kernel), strides=strides,
                           padding=padding, **kwargs)
    make = lambda impl: layers.ConvTranspose(features, kernel, strides,
                                             padding, impl=impl, **kwargs)
  return ref, make


def _all_cases():
  return [('conv_' + c[0], 'conv') + c[1:] for c in _CONV_CASES] + [
      ('convT_' + c[0], 'conv_transpose') + c[1:]
      for c in _CONV_TRANSPOSE_CASES
  ]


# Winograd rounds differently from a direct sum: its outputs are compared
# relative to their scale (see tests/winograd_test.py).
_WINOGRAD_RTOL_OF_SCALE = 2e-5


def _winograd_routed(x_shape, w_shape, strides, dilation, pads):
  """Whether conv_cpu.conv computes this problem by Winograd."""
  return conv_cpu._winograd_route(x_shape, w_shape, strides, dilation, pads,
                                  jnp.float32) is not None


def _inputs(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), (_BATCH,) + shape)


class LayersMatchFlaxTest(parameterized.TestCase):

  @parameterized.named_parameters(*_all_cases())
  def test_params_outputs_and_grads(self, kind, shape, features, kernel,
                                    strides, padding):
    ref, make = _layers(kind, features, kernel, strides, padding)
    x = _inputs(shape)
    modules = {impl: make(impl) for impl in _IMPLS}
    dy = jax.random.normal(
        jax.random.key(2), jax.eval_shape(ref.init_with_output,
                                          jax.random.key(1), x)[0].shape)

    def loss(module, params, x):
      return jnp.sum(module.apply(params, x) * dy)

    @jax.jit  # One compilation for everything: compiling dominates here.
    def run(x):
      ref_init = ref.init(jax.random.key(1), x)
      # Non-zero bias, so that its gradient and broadcasting are exercised.
      params = jax.tree.map(lambda p: p + 0.1, ref_init)
      return ref_init, {
          name: (m.init(jax.random.key(1), x), m.apply(params, x),
                 jax.grad(loss, argnums=(1, 2))(m, params, x))
          for name, m in (('ref', ref), *modules.items())
      }

    ref_init, results = run(x)
    _, y_ref, grad_ref = results['ref']
    for impl in _IMPLS:
      with self.subTest(impl=impl):
        init, y, grads = results[impl]
        # Same tree, shapes, dtypes and initial values as the Flax layer.
        chex.assert_trees_all_equal(init, ref_init)
        self.assertEqual(y.shape, y_ref.shape)
        np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
        # Gradients sum over batch and pixels: compare relative to scale.
        for got, want in zip(jax.tree.leaves(grads),
                             jax.tree.leaves(grad_ref)):
          scale = float(jnp.max(jnp.abs(want)))
          np.testing.assert_allclose(got, want, atol=1e-5 * scale, rtol=1e-5)

  def _problems(self):
    """(x shape, w shape, strides, dilation, pads) of every case."""
    problems = []
    for _, kind, shape, features, kernel, strides, padding in _all_cases():
      w_shape = (kernel, kernel, shape[-1], features)
      if kind == 'conv':
        pads = layers._conv_pads(shape[:2], kernel, strides, padding)
        problems.append((shape, w_shape, strides, 1, pads))
      else:
        pads = layers._conv_transpose_pads(kernel, strides, padding)
        problems.append((shape, w_shape, 1, strides, pads))
    return problems

  @parameterized.named_parameters(('whole_batch', None), ('chunked', 1))
  def test_every_formulation_matches_lax(self, chunk_elements):
    # conv_cpu.conv picks one formulation per shape; check every one of them
    # (phases, col2im, chunked or not) on every case, forward and VJP. A
    # chunk budget of 1 value (and no minimum chunk) makes every example its
    # own batch chunk.
    problems = self._problems()

    def run():
      out = []
      for i, (shape, w_shape, strides, dilation, pads) in enumerate(problems):
        # Three examples: chunks of unequal size when the budget splits.
        x = jax.random.normal(jax.random.key(i), (3,) + shape)
        w = jax.random.normal(jax.random.key(i + 100), w_shape)
        ref = lambda x, w: jax.lax.conv_general_dilated(
            x, w, (strides,) * 2, pads, lhs_dilation=(dilation,) * 2,
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        fast = lambda x, w: conv_cpu.conv(x, w, strides, dilation, pads)
        y, vjp_ref = jax.vjp(ref, x, w)
        dy = jax.random.normal(jax.random.key(i + 200), y.shape)
        got, vjp_fast = jax.vjp(fast, x, w)
        # The whole-layer formulations that only some shapes route to.
        others = [conv_cpu.correlate_patches(x, w, strides, pads)
                  ] if dilation == 1 else []
        if strides == dilation == 1:
          others += [conv_cpu.correlate_scatter(x, w, pads),
                     conv_cpu.correlate_rows(x, w, pads)]
        out.append((y, got, others, vjp_ref(dy), vjp_fast(dy)))
      return out

    if chunk_elements is None:
      results = jax.jit(run)()
    else:
      with mock.patch.object(conv_cpu, '_CHUNK_ELEMENTS', chunk_elements), \
          mock.patch.object(conv_cpu, '_MIN_CHUNK', 1):
        results = jax.jit(run)()
    for (want, got, others, grads_ref, grads), problem in zip(results,
                                                              problems):
      for y in (got, *others):
        np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-5,
                                   err_msg=str(problem))
      for g, r in zip(grads, grads_ref):
        scale = float(jnp.max(jnp.abs(r)))
        np.testing.assert_allclose(g, r, atol=1e-5 * scale, rtol=1e-5,
                                   err_msg=str(problem))

  @parameterized.product(channels=(1, 3, 8, 16), strides=(1, 2),
                         rows=((0, 1, 2), (2,)))
  def test_windows_gather_and_slices_agree(self, channels, strides, rows):
    # `_windows` gathers below _SLICED_WINDOW_CHANNELS and slices from it on;
    # both must give the same (row, col, C)-ordered windows.
    k, size = 3, (3, 4)
    xp = np.random.default_rng(channels).standard_normal(
        (2, 9, 10, channels)).astype(np.float32)
    want = np.stack([
        np.stack([xp[:, i:i + strides * size[0]:strides,
                     j:j + strides * size[1]:strides] for j in range(k)],
                 axis=3)
        for i in rows], axis=3).reshape(2, *size, -1)
    got = jax.jit(conv_cpu._windows, static_argnums=(1, 2, 3, 4))(
        xp, rows, k, size, strides)
    np.testing.assert_array_equal(got, want)

  def test_chunks_cover_the_batch_under_the_budget(self):
    for batch, per_example in ((100, 46080), (100, 12000), (100, 1),
                               (3, 10**9), (7, 3)):
      with mock.patch.object(conv_cpu, '_CHUNK_ELEMENTS', 100_000), \
          mock.patch.object(conv_cpu, '_MIN_CHUNK', 1):
        bounds = conv_cpu._chunk_bounds(batch, per_example)
      self.assertEqual(bounds[0][0], 0)
      self.assertEqual(bounds[-1][1], batch)
      for (_, end), (start, _) in zip(bounds, bounds[1:]):
        self.assertEqual(end, start)
      sizes = [e - s for s, e in bounds]
      # One example per chunk at most when one exceeds the budget.
      self.assertLessEqual(max(sizes) * per_example,
                           max(100_000, per_example))
      self.assertLessEqual(max(sizes) - min(sizes), 1)

  @parameterized.named_parameters(
      ('conv_d0', 'conv', (14, 14, 8), 8, 5, 2, 2),
      ('conv_enc', 'conv', (12, 12, 8), 8, 5, 1, 'VALID'),
      ('convT_s2', 'conv_transpose', (12, 12, 8), 8, 5, 2, 'SAME'),
      ('convT_s1', 'conv_transpose', (8, 8, 16), 8, 5, 1, 'VALID'),
  )
  def test_second_order_grads(self, kind, shape, features, kernel, strides,
                              padding):
    # The hand-written VJP is built from the same layer, so it is itself
    # differentiable, e.g. for gradient penalties.
    _, make = _layers(kind, features, kernel, strides, padding)
    x = _inputs(shape)
    params = make('xla').init(jax.random.key(1), x)

    def penalty(module, params):
      grad_x = jax.grad(lambda x: jnp.sum(jnp.sin(module.apply(params, x))))(x)
      return jnp.sum(grad_x ** 2)

    want = jax.grad(penalty, argnums=1)(make('xla'), params)
    got = jax.jit(jax.grad(penalty, argnums=1), static_argnums=0)(
        make('fast'), params)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, atol=1e-5 * float(jnp.max(jnp.abs(w))),
                                 rtol=1e-4)

  @parameterized.named_parameters(
      ('conv', 'conv', (14, 14, 8), 8, 5, 2, 2),
      ('convT_s2', 'conv_transpose', (12, 12, 8), 8, 5, 2, 'SAME'),
      ('convT_s1', 'conv_transpose', (24, 24, 8), 1, 5, 1, 'VALID'),
  )
  def test_bfloat16_compute(self, kind, shape, features, kernel, strides,
                            padding):
    ref, _ = _layers(kind, features, kernel, strides, padding)
    _, make = _layers(kind, features, kernel, strides, padding,
                      dtype=jnp.bfloat16)
    x = _inputs(shape)
    params = ref.init(jax.random.key(1), x)
    y_ref = ref.apply(params, x)
    for impl in ('xla', 'fast'):
      with self.subTest(impl=impl):
        module = make(impl)
        # Parameters stay in param_dtype; only the computation is bf16.
        chex.assert_trees_all_equal_dtypes(
            module.init(jax.random.key(1), x), params)
        y, dx = jax.jit(lambda p, x: (
            module.apply(p, x),
            jax.grad(lambda x: jnp.sum(module.apply(p, x).astype(
                jnp.float32)))(x)))(params, x)
        self.assertEqual(y.dtype, jnp.bfloat16)
        self.assertEqual(dx.dtype, jnp.float32)
        scale = float(jnp.max(jnp.abs(y_ref)))
        np.testing.assert_allclose(
            y.astype(jnp.float32), y_ref, atol=2e-2 * scale)

  @parameterized.named_parameters(('conv', 'conv'),
                                  ('conv_transpose', 'conv_transpose'))
  def test_batch_axes_like_flax(self, kind):
    # Flax folds several leading batch axes into one and accepts a single
    # unbatched image; so must these layers.
    ref, make = _layers(kind, 4, 3, 2, 'SAME')
    module = make('fast')
    x = jax.random.normal(jax.random.key(0), (2, 3, 6, 6, 4))
    params = ref.init(jax.random.key(1), x)
    for inputs in (x, x[0, 0]):
      np.testing.assert_allclose(module.apply(params, inputs),
                                 ref.apply(params, inputs),
                                 atol=1e-5, rtol=1e-5)


class ResolveImplTest(absltest.TestCase):

  def test_auto_follows_backend(self):
    self.assertEqual(jax.default_backend(), 'cpu')
    self.assertEqual(layers.resolve_impl('auto'), 'fast')
    for backend in ('gpu', 'tpu'):
      with mock.patch.object(jax, 'default_backend', return_value=backend):
        self.assertEqual(layers.resolve_impl('auto'), 'xla')

  def test_explicit_impls_pass_through(self):
    self.assertEqual(layers.resolve_impl('xla'), 'xla')
    self.assertEqual(layers.resolve_impl('fast'), 'fast')

  def test_unknown_impl_raises(self):
    with self.assertRaisesRegex(ValueError, 'Unknown convolution impl'):
      layers.resolve_impl('cudnn')
    x = jnp.zeros((1, 8, 8, 2))
    for module in (layers.Conv(4, 3, impl='im2col'),
                   layers.ConvTranspose(4, 3, impl='')):
      with self.assertRaises(ValueError):
        module.init(jax.random.key(0), x)

  def test_bad_padding_raises(self):
    x = jnp.zeros((1, 8, 8, 2))
    for module in (layers.Conv(4, 3, padding='CIRCULAR'),
                   layers.ConvTranspose(4, 3, padding='CAUSAL')):
      with self.assertRaises(ValueError):
        module.init(jax.random.key(0), x)



class ChunkMinimumTest(absltest.TestCase):

  def test_chunks_never_go_below_the_minimum(self):
    # Convolutions of a few examples are slow on XLA:CPU: a chunk only goes
    # below _MIN_CHUNK examples when the whole batch does.
    with mock.patch.object(conv_cpu, '_CHUNK_ELEMENTS', 1):
      bounds = conv_cpu._chunk_bounds(100, 10**6)
      self.assertEqual(min(e - s for s, e in bounds), conv_cpu._MIN_CHUNK)
      self.assertEqual(conv_cpu._chunk_bounds(3, 10**6), [(0, 3)])


class BeforeBiasTest(parameterized.TestCase):

  @parameterized.parameters('xla', 'fast')
  def test_pooling_before_the_bias_is_pooling_after_it(self, impl):
    # The encoder pools before adding the bias: max(y + b) = max(y) + b
    # per channel, in value and in the gradients of x, kernel and bias.
    from sgan_jax import models  # pylint: disable=g-import-not-at-top
    module = layers.Conv(4, 5, padding='VALID', impl=impl)
    x = jax.random.normal(jax.random.key(0), (2, 13, 12, 3))
    params = module.init(jax.random.key(1), x)
    params = jax.tree.map(lambda p: p + 0.3, params)  # a nonzero bias
    pooled_first = lambda p, v: module.apply(
        p, v, before_bias=models.max_pool_2x2)
    pooled_last = lambda p, v: models.max_pool_2x2(module.apply(p, v))
    np.testing.assert_allclose(pooled_first(params, x),
                               pooled_last(params, x), atol=1e-6)
    self.assertEqual(pooled_first(params, x).shape, (2, 4, 4, 4))
    loss = lambda f: lambda p, v: jnp.sum(jnp.sin(f(p, v)))
    grads = [jax.grad(loss(f), argnums=(0, 1))(params, x)
             for f in (pooled_first, pooled_last)]
    chex.assert_trees_all_close(grads[0], grads[1], atol=1e-5)


class WinogradLayersTest(parameterized.TestCase):
  """The layers at a batch with enough tiles that 'fast' runs Winograd
  (the small-batch cases above take the other formulations)."""

  @parameterized.named_parameters(
      ('conv_valid', 'conv', (12, 12, 16), 1, 'VALID'),
      ('conv_transpose_s1_valid', 'conv_transpose', (8, 8, 16), 1, 'VALID'),
      ('conv_transpose_s2_same', 'conv_transpose', (12, 12, 16), 2, 'SAME'),
  )
  def test_matches_flax(self, kind, shape, strides, padding):
    k, features = 5, 16
    ref, make = _layers(kind, features, k, strides, padding)
    x = jax.random.normal(jax.random.key(0), (100,) + shape)
    w_shape = (k, k, shape[-1], features)
    if kind == 'conv':
      routed = _winograd_routed(x.shape, w_shape, strides, 1,
                                layers._conv_pads(shape[:2], k, strides,
                                                  padding))
    else:
      routed = _winograd_routed(x.shape, w_shape, 1, strides,
                                layers._conv_transpose_pads(k, strides,
                                                            padding))
    self.assertTrue(routed)
    fast = make('fast')
    params = ref.init(jax.random.key(1), x[:1])
    dy = jax.random.normal(jax.random.key(2), ref.apply(params, x).shape)

    @jax.jit
    def run(x):
      return [(m.apply(params, x),
               jax.grad(lambda p, x: jnp.sum(m.apply(p, x) * dy),
                        argnums=(0, 1))(params, x)) for m in (ref, fast)]

    (y_ref, g_ref), (y, g) = run(x)
    for got, want in zip([y] + jax.tree.leaves(g),
                         [y_ref] + jax.tree.leaves(g_ref)):
      np.testing.assert_allclose(
          got, want, rtol=0,
          atol=_WINOGRAD_RTOL_OF_SCALE * float(jnp.max(jnp.abs(want))))


class DilatedWinogradTest(parameterized.TestCase):
  """`conv_cpu._dilated_winograd`: all output phases of a transposed
  convolution as one stride-1 Winograd correlation, for any padding."""

  @parameterized.named_parameters(
      ('s2_same', (9, 8, 16), 2, 'SAME'),
      ('s2_valid', (8, 9, 16), 2, 'VALID'),
      ('s2_int_pad', (8, 8, 16), 2, 1),
      ('s3_same', (8, 8, 16), 3, 'SAME'),
  )
  def test_matches_lax(self, shape, strides, padding):
    k, features = 5, 16
    pads = layers._conv_transpose_pads(k, strides, padding)
    x = jax.random.normal(jax.random.key(0), (2,) + shape)
    w = jax.random.normal(jax.random.key(1), (k, k, shape[-1], features))
    ref = lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), pads, lhs_dilation=(strides,) * 2,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=jax.lax.Precision.HIGHEST)
    y_ref, vjp_ref = jax.vjp(ref, x, w)
    dy = jax.random.normal(jax.random.key(2), y_ref.shape)
    y, (dx, dw) = jax.jit(lambda x, w, dy: (
        conv_cpu._dilated_winograd(x, w, strides, pads),
        conv_cpu._dilated_winograd_vjp(x, w, dy, strides, pads)))(x, w, dy)
    self.assertEqual(y.shape, y_ref.shape)
    for got, want in zip((y, dx, dw), (y_ref, *vjp_ref(dy))):
      np.testing.assert_allclose(
          got, want, rtol=0,
          atol=_WINOGRAD_RTOL_OF_SCALE * float(jnp.max(jnp.abs(want))))

  def test_routing(self):
    same = layers._conv_transpose_pads(5, 2, 'SAME')
    routed = lambda x_shape, c, o: conv_cpu._winograd_dilated_applies(
        x_shape, (5, 5, c, o), 1, 2, same, jnp.float32)
    self.assertTrue(routed((100, 12, 12, 64), 64, 64))  # MNIST G0 12 -> 24
    # 4 -> 8: one tile an image, too few at batch 100, enough at 1000.
    self.assertFalse(routed((100, 4, 4, 128), 128, 128))
    self.assertTrue(routed((1000, 4, 4, 128), 128, 128))
    self.assertFalse(routed((100, 12, 12, 8), 8, 8))  # too few channels
    self.assertFalse(conv_cpu._winograd_dilated_applies(
        (100, 12, 12, 64), (5, 5, 64, 64), 1, 2, same, jnp.bfloat16))


if __name__ == '__main__':
  absltest.main()
