"""Flax 2-D convolution layers with a fast formulation for XLA:CPU.

``Conv`` and ``ConvTranspose`` are drop-in replacements for
``flax.linen.Conv`` / ``ConvTranspose`` (same parameter names, shapes, layout
and initialisation, so checkpoints do not depend on the implementation) and
the one place where the networks choose how a convolution is computed:

* ``impl='xla'``: the ``lax`` call the Flax layer makes; XLA's vendor
  convolutions are fast on GPU and TPU.
* ``impl='fast'``: `conv_cpu.conv`, the same function with each part of the
  forward and backward pass formulated the way XLA:CPU runs fast (XLA:CPU runs
  transposed convolutions and most kernel gradients 5-30x slower than the same
  arithmetic as matmuls).
* ``impl='auto'`` (the default): 'fast' on the CPU backend, 'xla' elsewhere.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from sgan_jax import conv_cpu

Array = jax.Array
Pads = conv_cpu.Pads

IMPLS = ('xla', 'fast', 'auto')

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def resolve_impl(impl: str) -> str:
  """Resolves a layer's ``impl`` field to the implementation that runs.

  Args:
    impl: 'xla' (the stock ``lax`` convolution, as in the Flax layers),
      'fast' (``conv_cpu.conv``: formulated for XLA:CPU's fast kernels) or
      'auto' ('fast' when JAX's default backend is the CPU, 'xla' elsewhere).

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


def _flatten_batch(x: Array) -> tuple[Array, tuple[int, ...] | None]:
  """Folds all leading batch axes into one, as the Flax conv layers do."""
  if x.ndim == 4:
    return x, None
  return x.reshape((-1,) + x.shape[-3:]), x.shape[:-3]


def _unflatten_batch(y: Array, batch_shape: tuple[int, ...] | None) -> Array:
  if batch_shape is None:
    return y
  return y.reshape(batch_shape + y.shape[1:])


class _ConvBase(nn.Module):
  """Fields, parameters and dtype handling shared by `Conv` and
  `ConvTranspose` (those of ``flax.linen.Conv``), in the attribute order of
  the Flax layers.

  Attributes:
    features: number of output channels.
    kernel_size: side of the square kernel.
    strides: the stride (`Conv`) or upsampling factor (`ConvTranspose`) in
      both spatial dimensions.
    padding: 'SAME', 'VALID' or a symmetric int pad of both sides of H and
      W (of the dilated input, for `ConvTranspose`).
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

  def _operands(self, x: Array) -> tuple[Array, Array, Array | None]:
    """(x, kernel, bias or None), created as Flax names them and promoted
    to the computation dtype; called from the subclasses' compact call."""
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
    return nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)


class Conv(_ConvBase):
  """2-D convolution, parameter-compatible with ``flax.linen.Conv``.

  Attributes: those of `_ConvBase`; ``strides`` is the window stride.
  """

  @nn.compact
  def __call__(self, x: Array,
               before_bias: Callable[[Array], Array] | None = None) -> Array:
    """Applies the convolution.

    Args:
      x: (..., H, W, C) input, NHWC; any number of leading batch axes.
      before_bias: an optional map applied to the convolution's output before
        the bias is added. It must commute with adding a per-channel
        constant, as max pooling does; then the result is that map of this
        layer's output, with the bias added to its (smaller) output.

    Returns:
      (..., Ho, Wo, features) output, or before_bias of it.
    """
    impl = resolve_impl(self.impl)
    x, batch_shape = _flatten_batch(x)
    x, kernel, bias = self._operands(x)
    # Computed on both paths: it also rejects a bad `padding`.
    pads = _conv_pads(x.shape[1:3], self.kernel_size, self.strides,
                      self.padding)
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
      y = conv_cpu.conv(x, kernel, self.strides, 1, pads)
    if before_bias is not None:
      y = before_bias(y)
    if bias is not None:
      y += bias
    return _unflatten_batch(y, batch_shape)


class ConvTranspose(_ConvBase):
  """2-D transposed conv, parameter-compatible with ``nn.ConvTranspose``.

  Matches ``flax.linen.ConvTranspose`` with its default
  ``transpose_kernel=False``: the kernel is (k, k, in, features) and is not
  flipped, and the output size is in*strides for 'SAME' and
  (in - 1)*strides + max(k, strides) for 'VALID'.

  Attributes: those of `_ConvBase`; ``strides`` is the upsampling factor
  (any positive int) and an int ``padding`` pads the dilated input.
  """

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
    x, kernel, bias = self._operands(x)
    pads = _conv_transpose_pads(self.kernel_size, self.strides, self.padding)
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
      y = conv_cpu.conv(x, kernel, 1, self.strides, pads)
    if bias is not None:
      y += bias
    return _unflatten_batch(y, batch_shape)
