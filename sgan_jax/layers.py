"""2-D convolution layers that run at matmul speed on XLA:CPU.

XLA:CPU runs transposed convolutions, the input gradients of strided ones and
the kernel gradients of transposed and 'SAME' ones up to 30x slower than the
same arithmetic as matrix products, which makes a Flax MNIST GAN step several
times slower than eager PyTorch on CPU.
``Conv`` and ``ConvTranspose`` here are drop-in replacements for the Flax
layers (same parameter names, shapes, layout and initialisation, so
checkpoints do not depend on the implementation) whose ``impl='fast'`` splits
each layer's forward and backward pass into convolutions, and runs each one
the way XLA:CPU does it fast, as measured on the SGAN shapes
(``benchmarks/conv_benchmark.py``):

* XLA:CPU hands most convolutions to YNNPACK, and those run through
  ``lax``: a ``Conv``'s forward pass, a ``ConvTranspose``'s input gradient
  (a plain strided convolution), a stride-1 ``ConvTranspose`` into 8 or more
  channels.
* Convolutions with input dilation (a stride-s ``ConvTranspose``'s forward
  pass, a strided ``Conv``'s input gradient) are up to 30x slower there and
  run as one matrix product instead: they are s*s stride-1 correlations of
  the *undilated* input, one per output phase (sub-pixel convolution), so
  the kernel is rearranged into one (D, D, in, s*s*out) kernel,
  D = ceil(k/s) give or take one, and the phases are interleaved by a
  depth-to-space reshape; the zeros of the dilated input are never
  multiplied. Stride-1 convolutions that enlarge the image into fewer than 8
  channels (a generator's last layer) are matmuls too.
* A stride-1 correlation as matmuls either *gathers* input windows (im2col:
  the D*D shifted slices concatenated on channels, then one dot;
  out_pixels * D*D * in intermediate values) or *scatters* per-pixel
  products (col2im: one dot to D*D*out values per input pixel, then shifted
  adds; in_pixels * D*D * out values), whichever moves less memory.
* Kernel gradients are one matmul of im2col windows (of the input or of the
  output cotangent, whichever are fewer) against the other operand, except
  for strided convolutions, whose ``lax`` gradient is fast.

On GPU/TPU the vendor convolutions are fast, so ``impl='auto'`` only picks
'fast' on the CPU backend.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

Array = jax.Array
Pads = tuple[tuple[int, int], tuple[int, int]]

IMPLS = ('xla', 'fast', 'auto')

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def resolve_impl(impl: str) -> str:
  """Resolves a layer's ``impl`` field to the implementation that runs.

  Args:
    impl: 'xla' (the stock ``lax`` convolution, as in the Flax layers),
      'fast' (``conv_fast``: matrix products where XLA:CPU's convolutions are
      slow) or 'auto' ('fast' when JAX's default backend is the CPU, 'xla'
      elsewhere).

  Returns:
    'xla' or 'fast'.

  Raises:
    ValueError: if ``impl`` is not one of ``IMPLS``.
  """
  if impl not in IMPLS:
    raise ValueError(
        f'Unknown convolution impl {impl!r}; expected one of {IMPLS}.'
    )
  if impl == 'auto':
    return 'fast' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def _conv_pads(
    in_size: Sequence[int],
    kernel_size: int,
    strides: int,
    padding: str | int,
) -> Pads:
  """Per-dimension (low, high) input padding of ``flax.linen.Conv``."""
  if isinstance(padding, str):
    if padding not in ('SAME', 'VALID'):
      raise ValueError(
          f"Conv padding must be 'SAME', 'VALID' or an int, got {padding!r}."
      )
    (hl, hh), (wl, wh) = lax.padtype_to_pads(
        tuple(in_size), (kernel_size,) * 2, (strides,) * 2, padding
    )
    return ((hl, hh), (wl, wh))
  if isinstance(padding, int) and not isinstance(padding, bool):
    return ((padding, padding),) * 2
  raise ValueError(
      f"Conv padding must be 'SAME', 'VALID' or an int, got {padding!r}."
  )


def _conv_transpose_pads(
    kernel_size: int, strides: int, padding: str | int
) -> Pads:
  """(low, high) padding of the *dilated* input, as ``lax.conv_transpose``.

  ``flax.linen.ConvTranspose`` calls ``lax.conv_transpose``, which turns
  'SAME'/'VALID' into explicit padding of the stride-dilated input with the
  rule below (copied from ``jax._src.lax.convolution`` because it is private)
  and passes integer padding through unchanged.

  Args:
    kernel_size: the (square) kernel size.
    strides: the stride, i.e. the input dilation.
    padding: 'SAME', 'VALID' or a symmetric int pad.

  Returns:
    The same (low, high) pair for both spatial dimensions.
  """
  k, s = kernel_size, strides
  if padding == 'SAME':
    pad_len = k + s - 2
    pad_lo = k - 1 if s > k - 1 else -(-pad_len // 2)
  elif padding == 'VALID':
    pad_len = k + s - 2 + max(k - s, 0)
    pad_lo = k - 1
  elif isinstance(padding, int) and not isinstance(padding, bool):
    pad_len, pad_lo = 2 * padding, padding
  else:
    raise ValueError(
        "ConvTranspose padding must be 'SAME', 'VALID' or an int, got "
        f'{padding!r}.'
    )
  return ((pad_lo, pad_len - pad_lo),) * 2


def _lax_padding(padding: str | int) -> str | list[tuple[int, int]]:
  """The padding argument the Flax layers hand to ``lax``."""
  return padding if isinstance(padding, str) else [(padding, padding)] * 2


def _pad_hw(x: Array, pads: Pads) -> Array:
  """Zero-pads (negative pads crop) the two spatial axes of an NHWC array."""
  (hl, hh), (wl, wh) = pads
  zero = jnp.zeros((), x.dtype)
  return lax.pad(x, zero, ((0, 0, 0), (hl, hh, 0), (wl, wh, 0), (0, 0, 0)))


def _out_size(size: int, window: int, stride: int, pads: tuple[int, int]):
  return (size + pads[0] + pads[1] - window) // stride + 1


def _im2col(
    x: Array, kh: int, kw: int, strides: int, pads: Pads
) -> Array:
  """(N, Ho, Wo, KH*KW*C) windows of pad(x), channel-minor (i, j, c) order.

  Args:
    x: (N, H, W, C) input.
    kh: window height.
    kw: window width.
    strides: window stride.
    pads: (low, high) zero padding of H and W; negative values crop.

  Returns:
    The windows, concatenated on the channel axis in the row-major order of
    a (KH, KW, C, O) kernel, so that a reshape of it contracts with them.
  """
  n, h, wd, c = x.shape
  ho = _out_size(h, kh, strides, pads[0])
  wo = _out_size(wd, kw, strides, pads[1])
  # Trim the high padding to what the last window reads, so that every slice
  # below is in bounds and no padded row is materialised for nothing.
  pads = (
      (pads[0][0], (ho - 1) * strides + kh - h - pads[0][0]),
      (pads[1][0], (wo - 1) * strides + kw - wd - pads[1][0]),
  )
  xp = _pad_hw(x, pads)
  cols = [
      lax.slice(
          xp,
          (0, i, j, 0),
          (n, i + (ho - 1) * strides + 1, j + (wo - 1) * strides + 1, c),
          (1, strides, strides, 1),
      )
      for i in range(kh)
      for j in range(kw)
  ]
  return jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


def _correlate_gather(
    x: Array, w: Array, strides: int, pads: Pads
) -> Array:
  """im2col correlation: y[o] = sum_d w[d] . pad(x)[o * strides + d].

  Args:
    x: (N, H, W, C) input.
    w: (KH, KW, C, O) kernel, not flipped (cross-correlation, as ``lax``).
    strides: window stride.
    pads: (low, high) zero padding of H and W; negative values crop.

  Returns:
    (N, Ho, Wo, O) output.
  """
  kh, kw, c, _ = w.shape
  cols = _im2col(x, kh, kw, strides, pads)
  return lax.dot_general(
      cols, w.reshape(kh * kw * c, -1), (((3,), (0,)), ((), ()))
  )


def _correlate_scatter(x: Array, w: Array, pads: Pads) -> Array:
  """col2im stride-1 correlation: y[o] = sum_d w[d] . pad(x)[o + d].

  Input pixel i reaches output pixel o = i + low - d through tap d, so the
  output is the sum over taps of the per-pixel products x[i] . w[d], shifted
  by low - d. This costs in_pixels * KH*KW * O memory instead of im2col's
  out_pixels * KH*KW * C, which is much less when the layer upsamples or
  reduces channels.

  Args:
    x: (N, H, W, C) input.
    w: (KH, KW, C, O) kernel, not flipped.
    pads: (low, high) zero padding of H and W; negative values crop.

  Returns:
    (N, Ho, Wo, O) output.
  """
  _, h, wd, c = x.shape
  kh, kw, _, o = w.shape
  ho = _out_size(h, kh, 1, pads[0])
  wo = _out_size(wd, kw, 1, pads[1])
  # Sum the shifted terms in at least f32: with bf16 inputs a bf16 running
  # sum would lose the precision a real convolution's accumulator keeps.
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  z = lax.dot_general(
      x,
      # Output channels ordered (column tap, row tap, O), see below.
      jnp.transpose(w, (2, 1, 0, 3)).reshape(c, kw * kh * o),
      (((3,), (0,)), ((), ())),
      preferred_element_type=acc_dtype,
  )
  # Overlap-add one axis at a time (KW + KH shifted terms, not KW*KH): XLA
  # fuses a sum of shifted pads into each of its consumers, e.g. into every
  # slice of the next layer's im2col, and a short sum keeps that
  # recomputation cheap.
  lo_h, lo_w = pads[0][0], pads[1][0]
  u = _sum([
      _pad_hw(t, ((0, 0), (lo_w - j, wo - wd - lo_w + j)))
      for j, t in enumerate(lax.split(z, (kh * o,) * kw, axis=3))
  ])  # (N, H, Wo, KH*O): one group of O channels per row tap.
  y = _sum([
      _pad_hw(t, ((lo_h - i, ho - h - lo_h + i), (0, 0)))
      for i, t in enumerate(lax.split(u, (o,) * kh, axis=3))
  ])
  return y.astype(x.dtype)


def _sum(terms: Sequence[Array]) -> Array:
  total = terms[0]
  for term in terms[1:]:
    total = total + term
  return total


def _scatters(x_shape: Sequence[int], w_shape: Sequence[int], pads: Pads):
  """Whether a stride-1 correlation should scatter rather than gather.

  Both formulations do the same multiply-adds; what differs is the size of
  the intermediate each one writes and reads back: out_pixels * KH*KW * C for
  gathering, in_pixels * KH*KW * O for scattering.

  Args:
    x_shape: (N, H, W, C) input shape.
    w_shape: (KH, KW, C, O) kernel shape.
    pads: (low, high) padding of H and W.

  Returns:
    True to scatter.
  """
  _, h, wd, c = x_shape
  kh, kw, _, o = w_shape
  out_pixels = _out_size(h, kh, 1, pads[0]) * _out_size(wd, kw, 1, pads[1])
  return h * wd * o < out_pixels * c


def _subpixel_kernel(kernel: Array, dilation: int, pad_lo: int):
  """Rearranges a transposed-convolution kernel into sub-pixel form.

  With the input dilated by s and padded by ``pad_lo``, output pixel
  o = s*m + r (phase r) is sum_t kernel[t] . x[m + (r + t - pad_lo) / s] over
  the taps t for which the division is exact. Writing the input offset as
  d = (r + t - pad_lo) / s, every phase reads offsets d in [d_min, d_max], so
  all phases together are one stride-1 correlation of the undilated input
  with a (D, D, C, s*s*O) kernel W[d, :, (r, o)] = kernel[s*d + pad_lo - r]
  (zero where that tap does not exist).

  Args:
    kernel: (k, k, C, O) kernel, not flipped, as ``flax.linen.ConvTranspose``.
    dilation: the input dilation (transposed-convolution stride) s.
    pad_lo: low padding of the dilated input (same for H and W).

  Returns:
    (w, d_min): the (D, D, C, s*s*O) kernel with output channels ordered
    (phase_h, phase_w, O), and the smallest input offset d_min.
  """
  k, _, c, o = kernel.shape
  s = dilation
  d_min = -(pad_lo // s)  # ceil(-pad_lo / s)
  d_max = (s - 1 + k - 1 - pad_lo) // s
  d = d_max - d_min + 1
  # Tap t = s*d' + (s-1-r) + first, with d' = d - d_min, so padding the kernel
  # to s*D taps starting at `first` and reshaping to (D, s) lays the taps out
  # by (offset, reversed phase) with zeros where taps do not exist: static
  # pads and reshapes only.
  first = s * d_min + pad_lo - (s - 1)
  lo, hi = -first, s * d - k + first
  w = lax.pad(
      kernel,
      jnp.zeros((), kernel.dtype),
      ((lo, hi, 0), (lo, hi, 0), (0, 0, 0), (0, 0, 0)),
  )
  w = w.reshape(d, s, d, s, c, o)[:, ::-1, :, ::-1]
  w = jnp.transpose(w, (0, 2, 4, 1, 3, 5)).reshape(d, d, c, s * s * o)
  return w, d_min


def _correlate_dilated(x: Array, w: Array, dilation: int, pads: Pads):
  """Sub-pixel correlation of the input dilated by ``dilation`` > 1.

  Args:
    x: (N, H, W, C) input.
    w: (k, k, C, O) kernel, not flipped.
    dilation: the input dilation s (transposed-convolution stride).
    pads: (low, high) padding of the dilated input; equal low pads.

  Returns:
    (N, Ho, Wo, O), equal to ``lax.conv_general_dilated(x, w, 1, pads,
    lhs_dilation=dilation)``.
  """
  n, h, wd, _ = x.shape
  k, _, _, o = w.shape
  s = dilation
  if pads[0][0] != pads[1][0]:
    raise ValueError(f'Sub-pixel path needs equal low pads, got {pads}.')
  w, d_min = _subpixel_kernel(w, s, pads[0][0])
  d = w.shape[0]
  out_h = _out_size((h - 1) * s + 1, k, 1, pads[0])
  out_w = _out_size((wd - 1) * s + 1, k, 1, pads[1])
  m_h, m_w = -(-out_h // s), -(-out_w // s)  # output rows/cols per phase
  # Zero padding of the undilated input is exact: every tap that would read
  # outside it reads a padding or dilation zero in the reference formulation.
  x_pads = (
      (-d_min, m_h - 1 + d - 1 + d_min - (h - 1)),
      (-d_min, m_w - 1 + d - 1 + d_min - (wd - 1)),
  )
  if _scatters(x.shape, w.shape, x_pads):
    y = _correlate_scatter(x, w, x_pads)
  else:
    y = _correlate_gather(x, w, 1, x_pads)  # (N, m_h, m_w, s*s*O)
  # Depth-to-space: interleave the phases, then drop the surplus of the last
  # phase row/column when the output size is not a multiple of s.
  y = y.reshape(n, m_h, m_w, s, s, o)
  y = jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(n, m_h * s, m_w * s, o)
  return y[:, :out_h, :out_w]


def _conv_matmul(
    x: Array, w: Array, strides: int, dilation: int, pads: Pads
) -> Array:
  """The matmul formulation that suits the shapes; see ``conv_fast``."""
  if dilation > 1:
    if strides != 1:
      raise NotImplementedError('Both strides and input dilation > 1.')
    return _correlate_dilated(x, w, dilation, pads)
  if strides == 1 and _scatters(x.shape, w.shape, pads):
    return _correlate_scatter(x, w, pads)
  return _correlate_gather(x, w, strides, pads)


def _conv_lax(
    x: Array, w: Array, strides: int, dilation: int, pads: Pads
) -> Array:
  return lax.conv_general_dilated(
      x,
      w,
      (strides,) * 2,
      pads,
      lhs_dilation=(dilation,) * 2,
      dimension_numbers=_DIMENSION_NUMBERS,
  )


def _upsamples(
    x_shape: Sequence[int], k: int, strides: int, dilation: int, pads: Pads
) -> bool:
  """Whether the convolution has more output than input pixels."""
  out_pixels = 1
  for n, pad in zip(x_shape[1:3], pads):
    out_pixels *= _out_size((n - 1) * dilation + 1, k, strides, pad)
  return out_pixels > x_shape[1] * x_shape[2]


# Below this many output channels, XLA:CPU's stride-1 'full' convolutions
# (more output than input pixels) run several times slower than the matmuls.
_FEW_CHANNELS = 8


def _prefers_matmul(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    strides: int,
    dilation: int,
    pads: Pads,
) -> bool:
  """Whether a convolution runs faster as matmuls than through XLA:CPU.

  XLA:CPU hands most convolutions to YNNPACK, which on the SGAN shapes is as
  fast as or faster than any matmul formulation here, except for those with
  input dilation (transposed convolutions of stride > 1, and the input
  gradients of strided convolutions; up to 30x slower) and those that
  enlarge the image into only a few channels (e.g. a generator's last layer;
  3-5x slower).

  Args:
    x_shape: (N, H, W, C) input shape.
    w_shape: (k, k, C, O) kernel shape.
    strides: window stride.
    dilation: input dilation.
    pads: (low, high) padding of the dilated input's H and W.

  Returns:
    True to use ``_conv_matmul``.
  """
  if dilation > 1:
    return True
  return w_shape[-1] < _FEW_CHANNELS and _upsamples(
      x_shape, w_shape[0], strides, dilation, pads
  )


def _conv(x: Array, w: Array, strides: int, dilation: int, pads: Pads):
  if _prefers_matmul(x.shape, w.shape, strides, dilation, pads):
    return _conv_matmul(x, w, strides, dilation, pads)
  return _conv_lax(x, w, strides, dilation, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_fast(
    x: Array, w: Array, strides: int, dilation: int, pads: Pads
) -> Array:
  """``lax.conv_general_dilated`` (NHWC, HWIO), fast on XLA:CPU.

  Computes y[o] = sum_t w[t] . xdp[o * strides + t], where xdp is the input
  dilated by ``dilation`` (zeros inserted between pixels: a transposed
  convolution's stride) and zero-padded by ``pads``. At most one of
  ``strides`` and ``dilation`` may exceed 1.

  Convolutions with input dilation, or that enlarge the image into few
  channels, run as matmuls (sub-pixel, im2col or col2im, see
  ``_conv_matmul``), the others through ``lax`` (``_prefers_matmul``). The
  gradient is hand-written: the input gradient is the transposed problem
  (stride and dilation swapped, kernel flipped), computed by ``conv_fast`` and
  so routed by the same rule: a transposed convolution's input gradient is a
  plain strided convolution, and the other way round. The kernel gradient is
  one matmul against im2col windows, except for strided convolutions, where
  XLA:CPU's own is faster; for transposed convolutions XLA:CPU's was 10-35x
  slower, and 4x for a 'SAME' stride-1 one.

  Args:
    x: (N, H, W, C) input.
    w: (k, k, C, O) kernel.
    strides: window stride.
    dilation: input dilation.
    pads: (low, high) padding of the dilated input's H and W.

  Returns:
    (N, Ho, Wo, O) output.
  """
  return _conv(x, w, strides, dilation, pads)


def _conv_fast_fwd(x, w, strides, dilation, pads):
  return _conv(x, w, strides, dilation, pads), (x, w)


def _conv_fast_bwd(strides, dilation, pads, residuals, dy):
  x, w = residuals
  k, _, c, o = w.shape
  # Padding of the input-gradient problem, as in lax's own transpose rule:
  # the dilated cotangent, padded, must be as long as the dilated input plus
  # k - 1.
  pads_dx = tuple(
      (k - 1 - lo, (n - 1) * dilation + lo - (m - 1) * strides)
      for (lo, _), n, m in zip(pads, x.shape[1:3], dy.shape[1:3])
  )
  # Kernel gradients sum over every pixel of the batch: accumulate in f32.
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  w_flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
  dx = conv_fast(dy, w_flipped, dilation, strides, pads_dx)
  if strides > 1:
    # Here XLA:CPU's own kernel gradient beats an im2col of strided slices.
    _, vjp = jax.vjp(lambda w: _conv_lax(x, w, strides, dilation, pads), w)
    (dw,) = vjp(dy)
  elif dilation == 1 and not _scatters(x.shape, w.shape, pads):
    # dw[t] = sum_o window_t(x)[o]^T dy[o]: the windows of x, the smaller
    # im2col when the layer does not enlarge the image.
    cols = _im2col(x, k, k, 1, pads)
    dw = lax.dot_general(cols, dy, (((0, 1, 2), (0, 1, 2)), ((), ())),
                         preferred_element_type=acc_dtype)
    dw = dw.reshape(k, k, c, o)
  else:
    # dw[t] = sum_i x[i]^T dy[dilation * i + lo - t]: windows of dy at stride
    # `dilation` (those of the input-gradient problem), taps in flipped order.
    cols = _im2col(dy, k, k, dilation, pads_dx)
    dw = lax.dot_general(x, cols, (((0, 1, 2), (0, 1, 2)), ((), ())),
                         preferred_element_type=acc_dtype)
    dw = jnp.transpose(dw.reshape(c, k, k, o)[:, ::-1, ::-1], (1, 2, 0, 3))
  return dx.astype(x.dtype), dw.astype(w.dtype)


conv_fast.defvjp(_conv_fast_fwd, _conv_fast_bwd)


def _flatten_batch(x: Array) -> tuple[Array, tuple[int, ...] | None]:
  """Folds all leading batch axes into one, as the Flax conv layers do."""
  if x.ndim == 4:
    return x, None
  return x.reshape((-1,) + x.shape[-3:]), x.shape[:-3]


def _unflatten_batch(y: Array, batch_shape: tuple[int, ...] | None) -> Array:
  if batch_shape is None:
    return y
  return y.reshape(batch_shape + y.shape[1:])


class Conv(nn.Module):
  """2-D convolution, parameter-compatible with ``flax.linen.Conv``.

  Attributes:
    features: number of output channels.
    kernel_size: side of the square kernel.
    strides: stride in both spatial dimensions.
    padding: 'SAME', 'VALID' or a symmetric int pad of both sides of H and W.
    use_bias: whether to add a bias.
    kernel_init: initializer of the (k, k, in, features) kernel.
    bias_init: initializer of the (features,) bias.
    dtype: computation dtype (default: inferred from inputs and params).
    param_dtype: dtype of the parameters.
    impl: 'xla', 'fast' or 'auto'; see ``resolve_impl``.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: str | int = 'SAME'
  use_bias: bool = True
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Array] = nn.initializers.zeros
  dtype: Any = None
  param_dtype: Any = jnp.float32
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the convolution.

    Args:
      x: (..., H, W, C) input, NHWC; any number of leading batch axes.

    Returns:
      (..., Ho, Wo, features) output.
    """
    impl = resolve_impl(self.impl)
    x, batch_shape = _flatten_batch(x)
    k = self.kernel_size
    kernel = self.param(
        'kernel',
        self.kernel_init,
        (k, k, x.shape[-1], self.features),
        self.param_dtype,
    )
    bias = (
        self.param('bias', self.bias_init, (self.features,), self.param_dtype)
        if self.use_bias
        else None
    )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    pads = _conv_pads(x.shape[1:3], k, self.strides, self.padding)
    if impl == 'xla':
      # The call flax.linen.Conv makes.
      y = lax.conv_general_dilated(
          x,
          kernel,
          (self.strides,) * 2,
          _lax_padding(self.padding),
          dimension_numbers=_DIMENSION_NUMBERS,
      )
    else:
      y = conv_fast(x, kernel, self.strides, 1, pads)
    if bias is not None:
      y += bias
    return _unflatten_batch(y, batch_shape)


class ConvTranspose(nn.Module):
  """2-D transposed conv, parameter-compatible with ``nn.ConvTranspose``.

  Matches ``flax.linen.ConvTranspose`` with its default
  ``transpose_kernel=False``: the kernel is (k, k, in, features) and is not
  flipped, and the output size is in*strides for 'SAME' and
  (in - 1)*strides + max(k, strides) for 'VALID'.

  Attributes:
    features: number of output channels.
    kernel_size: side of the square kernel.
    strides: upsampling factor in both spatial dimensions (any positive int).
    padding: 'SAME', 'VALID' or a symmetric int pad of the dilated input.
    use_bias: whether to add a bias.
    kernel_init: initializer of the (k, k, in, features) kernel.
    bias_init: initializer of the (features,) bias.
    dtype: computation dtype (default: inferred from inputs and params).
    param_dtype: dtype of the parameters.
    impl: 'xla', 'fast' or 'auto'; see ``resolve_impl``.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: str | int = 'SAME'
  use_bias: bool = True
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Array] = nn.initializers.zeros
  dtype: Any = None
  param_dtype: Any = jnp.float32
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the transposed convolution.

    Args:
      x: (..., H, W, C) input, NHWC; any number of leading batch axes.

    Returns:
      (..., Ho, Wo, features) output.
    """
    impl = resolve_impl(self.impl)
    x, batch_shape = _flatten_batch(x)
    k = self.kernel_size
    kernel = self.param(
        'kernel',
        self.kernel_init,
        (k, k, x.shape[-1], self.features),
        self.param_dtype,
    )
    bias = (
        self.param('bias', self.bias_init, (self.features,), self.param_dtype)
        if self.use_bias
        else None
    )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    pads = _conv_transpose_pads(k, self.strides, self.padding)
    if impl == 'xla':
      # The call flax.linen.ConvTranspose makes.
      y = lax.conv_transpose(
          x,
          kernel,
          (self.strides,) * 2,
          _lax_padding(self.padding),
          dimension_numbers=_DIMENSION_NUMBERS,
      )
    else:
      y = conv_fast(x, kernel, 1, self.strides, pads)
    if bias is not None:
      y += bias
    return _unflatten_batch(y, batch_shape)
