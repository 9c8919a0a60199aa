"""2-D convolutions (and their gradients) that run fast on XLA:CPU.

`conv(x, w, strides, dilation, pads)` computes exactly
``lax.conv_general_dilated(x, w, strides, pads, lhs_dilation=dilation)``
(NHWC / HWIO; a transposed convolution is the ``dilation > 1`` case) with a
hand-written VJP. Each of its three parts, the forward pass, the input
gradient and the kernel gradient, is computed the way XLA:CPU runs fastest on
the SGAN layer shapes (measured in `benchmarks/conv_benchmark.py`):

* XLA:CPU's own convolution kernels are fast for plain (undilated)
  convolutions, but convolutions with input dilation (transposed convolutions
  with stride > 1, the input gradients of strided convolutions) and most
  kernel gradients run 5-30x slower than the same multiply-adds as matrix
  products.
* A dilated convolution is split by output *phase*: output pixel
  o = s*m + r only meets the taps t = t0(r) + s*j, so phase r is a plain
  stride-1 convolution of the undilated input with the kernel slice
  ``w[t0::s]``. The s*s phases (per spatial axis s) are interleaved by a
  reshape. No multiplication by a dilation zero happens; the FLOPs are those
  of the layer.
* Kernel gradients: dilated convolutions use the same phase split (XLA's
  kernel gradient of each small stride-1 phase convolution); stride-1 ones
  that enlarge the image a matmul of the input against im2col windows of the
  output cotangent, built one kernel row at a time, or all at once when they
  hold at most 32 values (k*k*O: a generator's last layer); first layers
  (k*k*C at most 32) one matmul with the forward pass's own im2col patches,
  and ones whose kernel rows read at most 9 input values the same one kernel
  row at a time; the others XLA's own.
* Stride-1 convolutions that enlarge the image into fewer than 8 channels (a
  generator's last layer, an image gradient) are one matmul to k*k*O values
  per input pixel followed by shifted adds (col2im); into more channels, one
  convolution per kernel row along W, scattered along H (no multiply-adds
  with the k - 1 rows of padding).
* Convolutions whose windows hold at most 32 values (k*k*C: a first layer)
  are one matmul over im2col patches.
* Float32 5x5 convolutions with at least 16 input and output channels and
  at least 400 output tiles of 4x4 in the batch run Winograd (`winograd`),
  forward pass and both gradients, equal up to float rounding: stride-1
  ones that are unpadded (the encoders' conv2, F(4x4, 5x5), 6.25x fewer
  multiply-adds) or padded by 4 all round (G0's stride-1 transposed
  layer, as the unpadded problem's input gradient), and transposed
  (input-dilated) ones, whose output phases become one stride-1 3x3
  correlation to s*s*O channels (F(4x4, 3x3); `_dilated_winograd`).
* Batch-chunked results pass an optimization barrier, so that XLA cannot
  split a later batch reduction into per-chunk sums that its elementwise
  fusions then recompute per element.
* XLA:CPU's convolution kernels slow down 1.5-3.5x when a call's activations
  do not fit the core's cache, so convolutions run over the batch in chunks
  of at most `_CHUNK_ELEMENTS` activation values (input + output).

The input gradient is the transposed problem (stride and dilation swapped,
kernel flipped), computed by `conv` itself and so routed by the same rules;
the VJP is therefore differentiable again (e.g. for gradient penalties).
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from sgan_jax import winograd

Array = jax.Array
Pads = tuple[tuple[int, int], tuple[int, int]]

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
# Below this many output channels, XLA:CPU's stride-1 convolutions that
# enlarge the image run 3-5x slower than col2im.
_FEW_CHANNELS = 8
# Activation values (input + output of one call) per batch chunk: about the
# 1-2 MiB of L2 cache per core of a current x86 server core.
_CHUNK_ELEMENTS = 2**19
# Stride-1 kernel gradients whose kernel rows see at most this many input
# values (k * C) are faster as row-window matmuls than XLA's own (batch 100:
# MNIST encoder conv1, k5 C1, 3.1 vs 4.8 ms; CIFAR D0 conv1, k3 C3, 8.9 vs
# 21.9 ms); at k5 C3 (CIFAR encoder conv1) they are slower, 17.7 vs 11.7 ms.
_NARROW_ROW_WINDOWS = 9
_MIN_CHUNK = 8
# Correlations whose im2col patches hold at most this many values per output
# pixel (k*k*C: a first layer) are one matmul over them. Forward, batch 100:
# MNIST encoder conv1 (25) 3.1 vs 4.0 ms, CIFAR D0 conv1 (27) 16 vs 49 ms;
# the CIFAR encoder conv1 (75) is slower that way, 25.5 vs 19.1 ms.
_NARROW_PATCHES = 32
# Windows of inputs with at least this many channels are copied by slices,
# of fewer by a gather (see `_windows`).
_SLICED_WINDOW_CHANNELS = 8


def out_size(size: int, window: int, stride: int, pads: tuple[int, int]
             ) -> int:
  """Output length of a correlation along one axis."""
  return (size + pads[0] + pads[1] - window) // stride + 1


def pad_hw(x: Array, pads: Pads) -> Array:
  """Zero-pads (negative pads crop) the two spatial axes of an NHWC array."""
  (hl, hh), (wl, wh) = pads
  zero = jnp.zeros((), x.dtype)
  return lax.pad(x, zero, ((0, 0, 0), (hl, hh, 0), (wl, wh, 0), (0, 0, 0)))


def _lax_conv(x: Array, w: Array, strides: int, pads: Pads) -> Array:
  """XLA's undilated convolution; negative pads crop the input first."""
  crop = tuple((max(-lo, 0), max(-hi, 0)) for lo, hi in pads)
  if any(any(c) for c in crop):
    x = pad_hw(x, tuple((-lo, -hi) for lo, hi in crop))
  pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)
  return lax.conv_general_dilated(x, w, (strides,) * 2, pads,
                                  dimension_numbers=_DIMENSION_NUMBERS)


# ---------------------------------------------------------------------------
# Batch chunks.
# ---------------------------------------------------------------------------


def _chunk_bounds(batch: int, per_example: int) -> list[tuple[int, int]]:
  """Near-equal [start, end) slices of the batch.

  Each holds at most `_CHUNK_ELEMENTS` activation values, unless that would
  leave fewer than about `_MIN_CHUNK` examples per chunk (convolutions of a
  few examples are slow again): then chunks of about `_MIN_CHUNK`.
  """
  most = _CHUNK_ELEMENTS // max(per_example, 1)
  if most >= _MIN_CHUNK:
    chunks = -(-batch // most)  # none above the budget
  else:
    chunks = max(1, batch // _MIN_CHUNK)  # none below the minimum
  # Sizes differ by at most one, so at most two shapes are compiled.
  edges = [batch * i // chunks for i in range(chunks + 1)]
  return list(zip(edges[:-1], edges[1:]))


def _map_chunks(fn: Callable[[Array], Array], x: Array,
                out_per_example: int) -> Array:
  """fn over batch chunks of x, concatenated."""
  per = x[0].size + out_per_example
  bounds = _chunk_bounds(x.shape[0], per)
  if len(bounds) == 1:
    return fn(x)
  y = jnp.concatenate([fn(x[s:e]) for s, e in bounds], axis=0)
  # Without the barrier XLA rewrites a batch reduction of y (BatchNorm's
  # statistics) as a sum of per-chunk reductions and fuses that sum into
  # every elementwise consumer, where it is recomputed for each element
  # (MNIST G0: a 0.6 ms ReLU took 8-12 ms).
  return lax.optimization_barrier(y)


def _sum_chunks(fn: Callable[[Array, Array], Array], x: Array,
                dy: Array) -> Array:
  """Sum of fn(x chunk, dy chunk) over batch chunks (a kernel gradient)."""
  bounds = _chunk_bounds(x.shape[0], x[0].size + dy[0].size)
  total = None
  for s, e in bounds:
    part = fn(x[s:e], dy[s:e]).astype(jnp.promote_types(x.dtype,
                                                        jnp.float32))
    total = part if total is None else total + part
  return total


# ---------------------------------------------------------------------------
# Phases of a dilated convolution.
# ---------------------------------------------------------------------------


class _Phase(NamedTuple):
  """Output phase r of a dilated correlation along one axis.

  Attributes:
    offset: r; the phase's outputs are o = dilation * m + r.
    first_tap: t0, its first kernel tap; it uses taps t0, t0 + s, ...
    taps: how many (0 when the kernel is shorter than the dilation).
    pads: (low, high) padding of the *undilated* input (negative: crop) that
      makes the phase a VALID stride-1 correlation of `size` outputs.
    size: number of outputs of the phase.
  """
  offset: int
  first_tap: int
  taps: int
  pads: tuple[int, int]
  size: int


def _phases(size: int, k: int, dilation: int, pads: tuple[int, int]
            ) -> tuple[int, list[_Phase]]:
  """(output length, phases) of a correlation with input dilation.

  y[o] = sum_t w[t] xd[o + t - lo], xd[s i] = x[i] (0 elsewhere); with
  o = s m + r only taps t = t0 + s j with t0 = (lo - r) mod s meet a pixel,
  x[m + c + j] with c = (r + t0 - lo) / s, an integer.
  """
  s, lo = dilation, pads[0]
  total = out_size((size - 1) * s + 1, k, 1, pads)
  phases = []
  for r in range(s):
    t0 = (lo - r) % s
    taps = max(0, -(-(k - t0) // s))
    c = (r + t0 - lo) // s
    m = max(0, -(-(total - r) // s))
    phases.append(_Phase(r, t0, taps, (-c, m + c + taps - 1 - size), m))
  return total, phases


def _dilated(x: Array, w: Array, dilation: int, pads: Pads) -> Array:
  """Correlation of x dilated by `dilation`, as s*s stride-1 convolutions."""
  n, height, width, _ = x.shape
  k, _, _, o = w.shape
  s = dilation
  out_h, rows = _phases(height, k, s, pads[0])
  out_w, cols = _phases(width, k, s, pads[1])
  m_h, m_w = rows[0].size, cols[0].size  # phase 0 is the longest

  def phase(xc, a: _Phase, b: _Phase):
    if not (a.taps and b.taps and a.size and b.size):
      return jnp.zeros((xc.shape[0], m_h, m_w, o), x.dtype)
    wk = w[a.first_tap::s, b.first_tap::s]
    # Shorter phases are padded to m_h x m_w, then cropped after the
    # interleave.
    return _lax_conv(xc, wk, 1, ((a.pads[0], a.pads[1] + m_h - a.size),
                                 (b.pads[0], b.pads[1] + m_w - b.size)))

  def interleaved(xc):
    y = jnp.stack([jnp.stack([phase(xc, a, b) for b in cols], axis=3)
                   for a in rows], axis=2)  # (n, m_h, s, m_w, s, o)
    y = y.reshape(xc.shape[0], m_h * s, m_w * s, o)
    return y[:, :out_h, :out_w]

  return _map_chunks(interleaved, x, out_h * out_w * o)


def _dilated_kernel_grad(x: Array, dy: Array, k: int, dilation: int,
                         pads: Pads) -> Array:
  """dL/dw of `_dilated`: each phase's stride-1 kernel gradient."""
  _, height, width, c = x.shape
  o = dy.shape[-1]
  s = dilation
  _, rows = _phases(height, k, s, pads[0])
  _, cols = _phases(width, k, s, pads[1])
  acc = jnp.promote_types(x.dtype, jnp.float32)
  dw = jnp.zeros((k, k, c, o), acc)
  for a in rows:
    for b in cols:
      if not (a.taps and b.taps and a.size and b.size):
        continue
      dy_ab = dy[:, a.offset::s, b.offset::s]
      wk = jnp.zeros((a.taps, b.taps, c, o), x.dtype)

      def grad(xc, dc, wk=wk, a=a, b=b):
        _, vjp = jax.vjp(lambda v: _lax_conv(xc, v, 1, (a.pads, b.pads)), wk)
        return vjp(dc)[0]

      dw = dw.at[a.first_tap::s, b.first_tap::s].set(
          _sum_chunks(grad, x, dy_ab))
  return dw


class _PhaseWindow(NamedTuple):
  """All output phases of a dilated correlation along one axis as one
  stride-1 correlation with `window` taps (see `_phase_window`).

  Attributes:
    pads: (low, high) padding of the undilated input (negative: crop).
    window: taps of the common window.
    taps: (window, dilation) kernel tap that window tap j' applies in
      phase r, or -1 where that phase has none.
    size: outputs per phase (the longest phase's; shorter ones are cropped
      after the interleave).
    total: output length of the dilated correlation.
  """
  pads: tuple[int, int]
  window: int
  taps: np.ndarray
  size: int
  total: int


def _phase_window(size: int, k: int, dilation: int, pads: tuple[int, int]
                  ) -> _PhaseWindow:
  """Phase r reads x[m + c_r + j] with tap t0_r + s*j (`_phases`); aligned at
  the smallest c_r, all phases read one window of the same inputs."""
  total, phases = _phases(size, k, dilation, pads)
  live = [p for p in phases if p.taps and p.size]
  start = min(-p.pads[0] for p in live)
  window = max(-p.pads[0] - start + p.taps for p in live)
  taps = np.full((window, dilation), -1)
  for p in live:
    for j in range(p.taps):
      taps[-p.pads[0] - start + j, p.offset] = p.first_tap + dilation * j
  m = phases[0].size
  return _PhaseWindow((-start, m + window - 1 - size + start), window, taps,
                      m, total)


def _winograd_dilated_applies(x_shape: Sequence[int], w_shape: Sequence[int],
                              strides: int, dilation: int, pads: Pads,
                              dtype) -> bool:
  """Whether `_dilated_winograd` computes this correlation: a float32
  transposed convolution (dilation > 1) with a 5x5 kernel and at least
  `winograd.MIN_CHANNELS` channels in and out, whose phases share a window
  of at most 5 taps and `winograd.enough_tiles` outputs per phase."""
  k, _, c, o = w_shape
  if (dilation < 2 or strides != 1 or k != 5 or jnp.dtype(dtype) != jnp.float32
      or min(c, o) < winograd.MIN_CHANNELS):
    return False
  axes = [_phase_window(n, k, dilation, p)
          for n, p in zip(x_shape[1:3], pads)]
  return (all(a.window <= k for a in axes)
          and winograd.enough_tiles(x_shape[0], axes[0].size, axes[1].size))


def _dilated_parts(x_shape: Sequence[int], w_shape: Sequence[int],
                   dilation: int, pads: Pads):
  """(pad_input, phase_kernel, interleave): the linear maps around the one
  stride-1 correlation of `_dilated_winograd`."""
  k, _, c, o = w_shape
  s = dilation
  rows, cols = (_phase_window(n, k, s, p) for n, p in zip(x_shape[1:3], pads))

  def pad_input(x):
    return pad_hw(x, (rows.pads, cols.pads))

  def phase_kernel(w):
    # A zero tap at index k stands for "no tap in this phase".
    wz = jnp.pad(w, ((0, 1), (0, 1), (0, 0), (0, 0)))
    wp = wz[rows.taps[:, None, :, None], cols.taps[None, :, None, :]]
    # (window_h, window_w, s, s, C, O) -> (window_h, window_w, C, s*s*O)
    return jnp.transpose(wp, (0, 1, 4, 2, 3, 5)).reshape(
        rows.window, cols.window, c, s * s * o)

  def interleave(y):
    n = y.shape[0]
    y = y.reshape(n, rows.size, cols.size, s, s, o)
    y = jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(
        n, rows.size * s, cols.size * s, o)
    return y[:, :rows.total, :cols.total]

  return pad_input, phase_kernel, interleave


def _dilated_winograd(x: Array, w: Array, dilation: int, pads: Pads
                      ) -> Array:
  """A transposed convolution as ONE stride-1 correlation of the undilated
  input: the s*s output phases' kernels (3x3 and smaller for 5x5, s = 2)
  side by side on the output channels, over a common window, by Winograd.
  The phases share the input transform; the zero taps of the shorter phases
  cost 36 instead of 25 multiply-adds per pixel, before Winograd's 4x
  saving at 3x3."""
  pad_input, phase_kernel, interleave = _dilated_parts(x.shape, w.shape,
                                                       dilation, pads)
  return interleave(winograd.correlate(pad_input(x), phase_kernel(w)))


def _dilated_winograd_vjp(x: Array, w: Array, dy: Array, dilation: int,
                          pads: Pads) -> tuple[Array, Array]:
  """(dx, dw) of `_dilated_winograd`: the linear maps transposed around
  `winograd.correlate_vjp`."""
  pad_input, phase_kernel, interleave = _dilated_parts(x.shape, w.shape,
                                                       dilation, pads)
  xp, pad_t = jax.vjp(pad_input, x)
  wp, kernel_t = jax.vjp(phase_kernel, w)
  y_shape = jax.eval_shape(winograd.correlate, xp, wp)
  _, interleave_t = jax.vjp(interleave,
                            jnp.zeros(y_shape.shape, y_shape.dtype))
  dxp, dwp = winograd.correlate_vjp(xp, wp, interleave_t(dy)[0])
  return pad_t(dxp)[0], kernel_t(dwp)[0]


# ---------------------------------------------------------------------------
# Stride-1 matmul formulations.
# ---------------------------------------------------------------------------


def _enlarges(x_shape: Sequence[int], k: int, pads: Pads) -> bool:
  """Whether a stride-1 correlation has more output than input pixels."""
  h = out_size(x_shape[1], k, 1, pads[0])
  w = out_size(x_shape[2], k, 1, pads[1])
  return h * w > x_shape[1] * x_shape[2]


def correlate_scatter(x: Array, w: Array, pads: Pads) -> Array:
  """col2im stride-1 correlation: y[o] = sum_d w[d] . pad(x)[o + d].

  Input pixel i reaches output pixel o = i + low - d through tap d, so the
  output is the sum over taps of the per-pixel products x[i] . w[d], shifted
  by low - d: one matmul to KH*KW*O values per input pixel, then KW + KH
  shifted adds. It writes in_pixels * KH*KW * O intermediate values, far
  fewer than an im2col's out_pixels * KH*KW * C when the layer enlarges the
  image into few channels.

  Args:
    x: (N, H, W, C) input.
    w: (KH, KW, C, O) kernel, not flipped.
    pads: (low, high) zero padding of H and W; negative values crop.

  Returns:
    (N, Ho, Wo, O) output.
  """
  _, h, wd, c = x.shape
  kh, kw, _, o = w.shape
  ho = out_size(h, kh, 1, pads[0])
  wo = out_size(wd, kw, 1, pads[1])
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
  # fuses a sum of shifted pads into its consumers, and a short sum keeps
  # that recomputation cheap.
  lo_h, lo_w = pads[0][0], pads[1][0]
  u = sum(
      pad_hw(t, ((0, 0), (lo_w - j, wo - wd - lo_w + j)))
      for j, t in enumerate(lax.split(z, (kh * o,) * kw, axis=3))
  )  # (N, H, Wo, KH*O): one group of O channels per row tap.
  return _add_row_taps(u, kh, lo_h, ho).astype(x.dtype)


def correlate_rows(x: Array, w: Array, pads: Pads) -> Array:
  """Stride-1 correlation that scatters kernel rows and correlates columns.

  y[o] = sum_i z_i[o + i - low], where z_i is the correlation of x's own
  rows (no padding along H) with kernel row i along W. All kernel rows are
  one convolution to KH*O channels with a 1 x KW kernel, then KH shifted
  adds. An enlarging correlation (a stride-1 transposed convolution, the
  input gradient of a VALID one) pads H and W by k - 1; this way no
  multiply-adds meet the H padding (MNIST G0 8 -> 12: 3.9 instead of 5.9
  GFLOP per batch of 100, 21 vs 36 ms).

  Args:
    x: (N, H, W, C) input.
    w: (KH, KW, C, O) kernel, not flipped.
    pads: (low, high) zero padding of H and W; negative values crop.

  Returns:
    (N, Ho, Wo, O) output.
  """
  kh, kw, c, o = w.shape
  ho = out_size(x.shape[1], kh, 1, pads[0])
  rows = jnp.transpose(w, (1, 2, 0, 3)).reshape(1, kw, c, kh * o)
  z = _lax_conv(x, rows, 1, ((0, 0), pads[1]))  # (N, H, Wo, KH*O)
  acc = jnp.promote_types(x.dtype, jnp.float32)
  return _add_row_taps(z.astype(acc), kh, pads[0][0], ho).astype(x.dtype)


def _add_row_taps(u: Array, kh: int, lo_h: int, ho: int) -> Array:
  """Overlap-add along H: sum_i of u's i-th group of channels (one per
  kernel row tap i, of kh), shifted down by lo_h - i, as ho output rows."""
  h = u.shape[1]
  return sum(
      pad_hw(t, ((lo_h - i, ho - h - lo_h + i), (0, 0)))
      for i, t in enumerate(lax.split(u, (u.shape[-1] // kh,) * kh, axis=3))
  )


def _shifted(x: Array, offsets: Sequence[int], length: int, stride: int,
             axis: int, stack_axis: int) -> Array:
  """Strided slices x[o : o + stride*(length-1) + 1 : stride] along `axis`,
  one per offset o, stacked on a new axis at `stack_axis`."""
  return jnp.stack([
      lax.slice_in_dim(x, o, o + stride * (length - 1) + 1, stride, axis=axis)
      for o in offsets], axis=stack_axis)


def _windows(xp: Array, rows: Sequence[int], k: int,
             size: tuple[int, int], strides: int) -> Array:
  """The windows of padded xp that kernel taps (i, j), i in `rows`, j < k,
  read: (N, Ho, Wo, len(rows)*k*C), ordered (row, col, C).

  Few channels (the row windows of an image or of a 3-channel cotangent,
  e.g. CIFAR G0's last layer; full first-layer patches are `_patches`):
  one gather with constant indices. As strided slices these were several
  XLA:CPU kernels, together slower to compile (MNIST, all steps, when
  first-layer patches were built here: ~4 s more) for the same run time.
  Wide channels (the kernel gradient of G0's stride-1 layer, on the
  cotangent): slices along H, then along W, one loop fusion that copies
  whole C-vectors. The gather would compute its indices per element and
  come out batch-minor, needing a transposing copy, and XLA fuses the
  cotangent's BatchNorm backward into it, recomputed for every read: 3.6 vs
  1.2 ms per kernel row in the MNIST stack 0 step.
  """
  (ho, wo), s = size, strides
  n, _, _, c = xp.shape
  if c < _SLICED_WINDOW_CHANNELS:
    ih = s * np.arange(ho)[:, None] + np.asarray(rows)[None, :]  # (Ho, R)
    iw = s * np.arange(wo)[:, None] + np.arange(k)[None, :]  # (Wo, k)
    g = xp[:, ih[:, None, :, None], iw[None, :, None, :]]
  else:
    by_row = _shifted(xp, rows, ho, s, axis=1, stack_axis=3)  # (N,Ho,W,R,C)
    g = _shifted(by_row, range(k), wo, s, axis=2, stack_axis=4)
  return g.reshape(n, ho, wo, len(rows) * k * c)  # g: (N, Ho, Wo, R, k, C)


def _row_windows(x: Array, row: int, k: int, size: tuple[int, int],
                 strides: int = 1) -> Array:
  """The k windows of kernel row `row` of padded x, side by side on C."""
  return _windows(x, (row,), k, size, strides)


def _patches(x: Array, k: int, strides: int, pads: Pads,
             size: tuple[int, int]) -> Array:
  """im2col, tap-major: the windows of padded x as a (k*k*C, N*Ho*Wo)
  matrix, rows ordered (row, col, C).

  Built by k strided row slices of the input, then k column slices of
  those: about 2k XLA kernels, where one slice per tap made k*k (25 per
  patch matrix, ~200 small kernels in the MNIST stack 0 step; all MNIST
  steps compile in ~23 instead of ~28 s, same run time). A gather makes one
  kernel but runs 3-6 % slower steps. The pixel-major (N*Ho*Wo, k*k*C)
  layout, as a gather, came out batch-minor and needed a transposing copy
  for each of the two matmuls that read it (MNIST encoder conv1 forward +
  kernel gradient: 1.6x slower). Tap-major, the kernel gradient reads it as
  it is and only the forward pass transposes it. A first layer's forward
  pass and kernel gradient, and a generator's last layer's input and kernel
  gradients, build the same patches with this one function, so XLA computes
  them once (common-subexpression elimination).
  """
  (ho, wo), s = size, strides
  xp = pad_hw(x, pads)
  n, c = x.shape[0], x.shape[-1]
  rows = _shifted(xp, range(k), ho, s, axis=1, stack_axis=0)  # (k,N,Ho,Wp,C)
  taps = _shifted(rows, range(k), wo, s, axis=3, stack_axis=1)
  taps = taps.reshape(k * k, n, ho, wo, c)
  return jnp.moveaxis(taps, -1, 1).reshape(k * k * c, n * ho * wo)


def correlate_patches(x: Array, w: Array, strides: int, pads: Pads
                      ) -> Array:
  """im2col correlation: the k*k windows side by side, one matmul.

  For a first layer the patches are only k*k*C values per output pixel, and
  the matmul keeps both cores busy where XLA:CPU's convolution kernels for
  so few channels do not.

  Args:
    x: (N, H, W, C) input.
    w: (k, k, C, O) kernel.
    strides: window stride.
    pads: (low, high) zero padding of H and W; negative values crop.

  Returns:
    (N, Ho, Wo, O) output.
  """
  k, _, c, o = w.shape
  size = (out_size(x.shape[1], k, strides, pads[0]),
          out_size(x.shape[2], k, strides, pads[1]))
  y = lax.dot_general(
      _patches(x, k, strides, pads, size), w.reshape(k * k * c, o),
      (((0,), (0,)), ((), ())),
      preferred_element_type=jnp.promote_types(x.dtype, jnp.float32),
  )
  return y.reshape(x.shape[0], *size, o).astype(x.dtype)


def _kernel_grad_patches(x: Array, dy: Array, k: int, strides: int,
                         pads: Pads) -> Array:
  """dL/dw of a first-layer correlation: dw = patches(x)^T dy, one matmul
  over all N*Ho*Wo output pixels with the forward pass's own patches."""
  o = dy.shape[-1]
  dw = lax.dot_general(
      _patches(x, k, strides, pads, dy.shape[1:3]), dy.reshape(-1, o),
      (((1,), (0,)), ((), ())),
      preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
  return dw.reshape(k, k, x.shape[-1], o)


def _kernel_grad_windows(x: Array, dy: Array, k: int, strides: int,
                         pads: Pads) -> Array:
  """dL/dw of a correlation as one matmul per kernel row:
  dw[i, j] = sum_p pad(x)[s*p + (i, j)]^T dy[p], with the k windows of row i
  side by side on the channel axis: for a first layer on 1-3 channels, a
  K = N*Ho*Wo matmul where XLA's own kernel gradient runs far below matmul
  speed."""
  acc = jnp.promote_types(x.dtype, jnp.float32)
  xp = pad_hw(x, pads)
  size = dy.shape[1:3]
  rows = [lax.dot_general(_row_windows(xp, i, k, size, strides), dy,
                          (((0, 1, 2), (0, 1, 2)), ((), ())),
                          preferred_element_type=acc)
          for i in range(k)]  # each (k*C, O), ordered (tap j, channel)
  return jnp.stack(rows).reshape(k, k, x.shape[-1], dy.shape[-1])


def _kernel_grad_scattered(x: Array, dy: Array, k: int, pads: Pads
                           ) -> Array:
  """dL/dw of a stride-1 correlation that enlarges the image:
  dw[t] = sum_i x[i]^T dy[i + lo - t], so the windows are taken of dy (the
  input-gradient problem's), which are fewer than those of the padded x."""
  acc = jnp.promote_types(x.dtype, jnp.float32)
  c, o = x.shape[-1], dy.shape[-1]
  pads_dx = tuple((k - 1 - lo, n - 1 + lo - (m - 1))
                  for (lo, _), n, m in zip(pads, x.shape[1:3],
                                           dy.shape[1:3]))
  size = x.shape[1:3]
  if k * k * o <= _NARROW_PATCHES:
    # Few output channels (a generator's last layer): all windows of dy are
    # the patches the input gradient builds anyway, and one matmul reads x
    # once instead of once per kernel row.
    dw = lax.dot_general(_patches(dy, k, 1, pads_dx, size),
                         x.reshape(-1, c), (((1,), (0,)), ((), ())),
                         preferred_element_type=acc)  # (k*k*O, C), flipped
    return jnp.transpose(dw.reshape(k, k, o, c)[::-1, ::-1], (0, 1, 3, 2))
  dyp = pad_hw(dy, pads_dx)
  rows = [lax.dot_general(x, _row_windows(dyp, i, k, size),
                          (((0, 1, 2), (0, 1, 2)), ((), ())),
                          preferred_element_type=acc)
          for i in range(k)]  # each (C, k*O), taps in flipped order
  dw = jnp.stack(rows).reshape(k, c, k, o)
  return jnp.transpose(dw[::-1, :, ::-1], (0, 2, 1, 3))


# ---------------------------------------------------------------------------
# The convolution and its VJP.
# ---------------------------------------------------------------------------


def _winograd_route(x_shape: Sequence[int], w_shape: Sequence[int],
                    strides: int, dilation: int, pads: Pads, dtype
                    ) -> tuple[Callable[..., Array], Callable[..., Any]] | None:
  """(forward(x, w), vjp(x, w, dy) -> (dx, dw)) of the Winograd path that
  computes this convolution, or None. Forward pass and VJP both route
  through here, so they always take the same path."""
  args = (x_shape, w_shape, strides, dilation, pads, dtype)
  if winograd.applies(*args):
    return winograd.correlate, winograd.correlate_vjp
  if winograd.applies_full(*args):
    return winograd.correlate_full, winograd.correlate_full_vjp
  if _winograd_dilated_applies(*args):
    return (lambda x, w: _dilated_winograd(x, w, dilation, pads),
            lambda x, w, dy: _dilated_winograd_vjp(x, w, dy, dilation, pads))
  return None


def _forward(x: Array, w: Array, strides: int, dilation: int,
             pads: Pads) -> Array:
  k, o = w.shape[0], w.shape[-1]
  if dilation > 1 and strides != 1:
    raise NotImplementedError('Both strides and input dilation > 1.')
  route = _winograd_route(x.shape, w.shape, strides, dilation, pads, x.dtype)
  if route is not None:
    return route[0](x, w)
  if dilation > 1:
    return _dilated(x, w, dilation, pads)
  if k * k * x.shape[-1] <= _NARROW_PATCHES:
    return correlate_patches(x, w, strides, pads)
  if strides == 1 and _enlarges(x.shape, k, pads):
    if o < _FEW_CHANNELS:
      return correlate_scatter(x, w, pads)
    return correlate_rows(x, w, pads)
  out_h = out_size(x.shape[1], k, strides, pads[0])
  out_w = out_size(x.shape[2], k, strides, pads[1])
  return _map_chunks(lambda xc: _lax_conv(xc, w, strides, pads), x,
                     out_h * out_w * o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x: Array, w: Array, strides: int, dilation: int,
         pads: Pads) -> Array:
  """``lax.conv_general_dilated`` (NHWC, HWIO), fast on XLA:CPU.

  Computes y[o] = sum_t w[t] . xdp[o * strides + t], where xdp is the input
  dilated by ``dilation`` (zeros inserted between pixels: a transposed
  convolution's stride) and zero-padded by ``pads``. At most one of
  ``strides`` and ``dilation`` may exceed 1. See the module docstring for
  how each part is computed.

  Args:
    x: (N, H, W, C) input.
    w: (k, k, C, O) kernel.
    strides: window stride.
    dilation: input dilation.
    pads: (low, high) padding of the dilated input's H and W.

  Returns:
    (N, Ho, Wo, O) output.
  """
  return _forward(x, w, strides, dilation, pads)


def _conv_fwd(x, w, strides, dilation, pads):
  return _forward(x, w, strides, dilation, pads), (x, w)


def _conv_bwd(strides, dilation, pads, residuals, dy):
  x, w = residuals
  k = w.shape[0]
  route = _winograd_route(x.shape, w.shape, strides, dilation, pads, x.dtype)
  if route is not None:
    dx, dw = route[1](x, w, dy)
    return dx.astype(x.dtype), dw.astype(w.dtype)
  # Padding of the input-gradient problem, as in lax's own transpose rule:
  # the dilated cotangent, padded, must be as long as the dilated input plus
  # k - 1.
  pads_dx = tuple(
      (k - 1 - lo, (n - 1) * dilation + lo - (m - 1) * strides)
      for (lo, _), n, m in zip(pads, x.shape[1:3], dy.shape[1:3])
  )
  dx = conv(dy, winograd.flip_kernel(w), dilation, strides, pads_dx)
  if dilation > 1:
    dw = _dilated_kernel_grad(x, dy, k, dilation, pads)
  elif strides == 1 and _enlarges(x.shape, k, pads):
    dw = _kernel_grad_scattered(x, dy, k, pads)
  elif k * k * x.shape[-1] <= _NARROW_PATCHES:
    dw = _kernel_grad_patches(x, dy, k, strides, pads)
  elif k * x.shape[-1] <= _NARROW_ROW_WINDOWS:
    dw = _kernel_grad_windows(x, dy, k, strides, pads)
  else:
    def grad(xc, dc):
      _, vjp = jax.vjp(lambda v: _lax_conv(xc, v, strides, pads), w)
      return vjp(dc)[0]
    dw = _sum_chunks(grad, x, dy)
  return dx.astype(x.dtype), dw.astype(w.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)
