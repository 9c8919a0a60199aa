"""Winograd minimal filtering for stride-1 convolutions on XLA:CPU.

F(m x m, k x k) (Lavin & Gray, 2016) computes each m x m tile of outputs of a
k x k correlation from an a x a input tile (a = m + k - 1) with a*a instead of
m*m*k*k multiplications per channel pair:

  Y = A^T [ sum_c (G w_c G^T) * (B^T d_c B) ] A

per tile, with small constant matrices A, B, G. Over channels the a*a
elementwise products become a*a matmuls of (tiles, C) by (C, O), so the
multiply-adds of a 5x5 layer drop 6.25x at m = 4. The MNIST encoder's conv2
(32 -> 32 channels, 12 -> 8 pixels) is the case this is for: XLA:CPU's own
convolution (Eigen) runs its forward pass, input gradient and kernel gradient
at 100-140 GFLOP/s, ~10 ms per step at batch 100 on the 2-core VM of
`benchmarks/RESULTS.md`, against ~7 ms in eager PyTorch (oneDNN).

The gradients are the same algorithm transposed: the input gradient takes
the output cotangent through A, the a*a matmuls with the transformed kernel
and B back into overlapping input tiles (no multiply-adds with the k - 1
rows of zero padding that a full correlation would pay), and the kernel
gradient is a*a matmuls of the transformed input with the transformed
cotangent, taken back through G. All of it is plain `jax.numpy`, so the
gradients are differentiable again. A stride-1 transposed convolution (the
correlation of x padded by k - 1, `correlate_full`; MNIST G0 8 -> 12) is
that input gradient with the kernel flipped.

The result equals the convolution up to float rounding: the transforms
multiply by constants up to 5.25 (m = 4, k = 5), so errors are a few times
those of a direct float32 convolution (2e-6 to 1.2e-5 of the output's
scale on the SGAN layer shapes; `tests/winograd_test.py` allows 2e-5).
Layers that need the direct sum's rounding use ``impl='xla'``.
"""

from collections.abc import Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Output tile side. 4 is the common choice for 3x3 and 5x5 kernels: at 5x5
# 6.25x fewer multiplications, and interpolation points 0, +-1, +-2, +-1/2
# whose transforms stay well conditioned in float32.
TILE = 4
# The finite interpolation points, in the order they are used; a tile of a
# needs a - 1 of them (the last point is infinity).
_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)
# The kernel side `applies` accepts: 5x5 is measured faster than XLA:CPU's
# convolutions (the MNIST encoder's conv2); the SGAN nets' one unpadded 3x3
# stride-1 layer (CIFAR D0's last conv) was not measured.
_KERNEL = 5
# Tiles in the batch at least this: they are the rows of the a*a matmuls,
# and fewer make them too thin to pay for the transforms. MNIST G0 4 -> 8
# (one tile an image) forward: batch 100 9-13 ms direct vs 13-14 ms
# Winograd; batch 1000 86 vs 52 ms. The encoder's conv2 at batch 100 (400
# tiles) is faster by Winograd.
MIN_TILES = 400


def enough_tiles(batch: int, out_h: int, out_w: int) -> bool:
  """Whether an output of `batch` x `out_h` x `out_w` pixels is worth
  Winograd: at least one tile a side and `MIN_TILES` tiles in all."""
  tiles = batch * -(-out_h // TILE) * -(-out_w // TILE)
  return min(out_h, out_w) >= TILE and tiles >= MIN_TILES


# Both channel counts at least this: the a*a matmuls are (tiles, C) x (C, O)
# and must outweigh the transforms' memory traffic.
MIN_CHANNELS = 16


def applies(x_shape: Sequence[int], w_shape: Sequence[int], strides: int,
            dilation: int, pads, dtype) -> bool:
  """Whether `correlate` is used for this convolution.

  Args:
    x_shape: (N, H, W, C) of the input.
    w_shape: (k, k, C, O) of the kernel.
    strides: window stride.
    dilation: input dilation.
    pads: ((low, high), (low, high)) padding of H and W.
    dtype: the computation dtype.

  Returns:
    True for float32, stride 1, unpadded (VALID) convolutions with 5x5
    kernels, at least `MIN_CHANNELS` input and output channels and an
    output of `enough_tiles`. (`correlate` is correct for kernels up to
    5x5, see the tests; 5x5 is the size measured faster.)
  """
  k, k2, c, o = w_shape
  return (jnp.dtype(dtype) == jnp.float32 and strides == 1
          and dilation == 1 and k == k2 == _KERNEL
          and tuple(map(tuple, pads)) == ((0, 0), (0, 0))
          and min(c, o) >= MIN_CHANNELS
          and enough_tiles(x_shape[0], x_shape[1] - k + 1,
                           x_shape[2] - k + 1))


@functools.lru_cache(maxsize=None)
def transforms(m: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(A^T, G, B^T) of F(m, k): y = A^T [(G g) * (B^T d)] for one axis.

  Toom-Cook: the linear convolution s = u * g (len m + k - 1) of u (len m)
  and g (len k) is s = V^-1 [(V_m u) * (V_k g)], V_j evaluating a degree
  < j polynomial at the points (the last one at infinity: its leading
  coefficient). A correlation of d with g is that map transposed in u:
  y = V_m^T [(V_k g) * (V^-T d)].

  Args:
    m: outputs per tile.
    k: kernel taps.

  Returns:
    A^T (m, a), G (a, k) and B^T (a, a) as float64 arrays, a = m + k - 1.
  """
  a = m + k - 1
  points = _POINTS[:a - 1]

  def vandermonde(cols):
    v = np.zeros((a, cols))
    for i, p in enumerate(points):
      v[i] = np.asarray(p) ** np.arange(cols)
    v[a - 1, cols - 1] = 1.0  # The point at infinity.
    return v

  return vandermonde(m).T, vandermonde(k), np.linalg.inv(vandermonde(a)).T


class _Tiling:
  """The tile grid of one layer shape: `th` x `tw` tiles of `m` outputs."""

  def __init__(self, x_shape: Sequence[int], k: int, m: int = TILE):
    n, h, w, _ = x_shape
    self.m, self.a = m, m + k - 1
    self.ho, self.wo = h - k + 1, w - k + 1
    self.th, self.tw = -(-self.ho // m), -(-self.wo // m)
    # Zero rows and columns that complete the last tiles.
    self.pad_h = self.th * m + k - 1 - h
    self.pad_w = self.tw * m + k - 1 - w
    self.tiles = n * self.th * self.tw
    self.at, self.g, self.bt = transforms(m, k)


def _transform_tiles(x: Array, bt: np.ndarray, m: int, tiles: int,
                     axis: int) -> Array:
  """B^T along `axis`: out[u, ..., t, ...] = sum_j bt[u, j] x[m*t + j],
  as sums of strided slices that XLA fuses into one pass."""
  rows = []
  for u in range(bt.shape[0]):
    terms = [float(c) * lax.slice_in_dim(x, j, j + m * (tiles - 1) + 1, m,
                                          axis=axis)
             for j, c in enumerate(bt[u]) if c != 0.0]
    rows.append(functools.reduce(jnp.add, terms))
  return jnp.stack(rows)


def _mix(x: Array, mat: np.ndarray, axis: int,
         out_axis: int | None = None) -> Array:
  """out[..., u, ...] = sum_j mat[u, j] x[..., j, ...]: `axis` of x is
  replaced by the u axis, placed at `out_axis` (default: `axis`) of the
  result. Weighted sums of slices, one fused pass. (As an einsum, XLA:CPU
  ran it as matmuls with 3-6 columns and transposing copies, ~10 ms for
  MNIST G0's 128 x 512 kernel.)"""
  rows = []
  for coefs in mat:
    terms = [float(c) * lax.index_in_dim(x, j, axis, keepdims=False)
             for j, c in enumerate(coefs) if c != 0.0]
    rows.append(functools.reduce(jnp.add, terms) if terms else
                jnp.zeros_like(lax.index_in_dim(x, 0, axis, keepdims=False)))
  return jnp.stack(rows, axis=axis if out_axis is None else out_axis)


def _input_tiles(x: Array, t: _Tiling) -> Array:
  """B^T d B for every tile: (a*a, tiles, C), rows ordered (u, v)."""
  x = jnp.pad(x, ((0, 0), (0, t.pad_h), (0, t.pad_w), (0, 0)))
  v = _transform_tiles(x, t.bt, t.m, t.th, axis=1)  # (u, N, th, W, C)
  v = _transform_tiles(v, t.bt, t.m, t.tw, axis=3)  # (v, u, N, th, tw, C)
  return jnp.swapaxes(v, 0, 1).reshape(t.a * t.a, t.tiles, x.shape[-1])


def _overlap_add(y: Array, axis: int, m: int) -> Array:
  """Adds overlapping tiles: y has (tiles, q*m) at (axis, axis + 1), tile t
  starting at pixel m*t; returns (tiles + q - 1) * m pixels on `axis`."""
  tiles, span = y.shape[axis], y.shape[axis + 1]
  q = span // m
  y = y.reshape(y.shape[:axis + 1] + (q, m) + y.shape[axis + 2:])
  zero = jnp.zeros((), y.dtype)
  total = None
  for j in range(q):
    part = lax.index_in_dim(y, j, axis + 1, keepdims=False)
    pads = [(0, 0, 0)] * part.ndim
    pads[axis] = (j, q - 1 - j, 0)  # Chunk j of a tile lands one tile on.
    part = lax.pad(part, zero, pads)
    total = part if total is None else total + part
  return total.reshape(total.shape[:axis] + ((tiles + q - 1) * m,)
                       + total.shape[axis + 2:])


def _input_tiles_transpose(dv: Array, t: _Tiling, x_shape: Sequence[int]
                           ) -> Array:
  """The transpose of `_input_tiles`: (a*a, tiles, C) -> (N, H, W, C)."""
  n, h, w, c = x_shape
  q = -(-t.a // t.m)
  # B^T padded to whole tiles of m columns, so that `_overlap_add` can fold.
  bt = np.zeros((t.a, q * t.m))
  bt[:, :t.a] = t.bt
  dv = dv.reshape(t.a, t.a, n, t.th, t.tw, c)
  # Along W: (u, N, th, tw, j, C), then fold the tiles into W pixels.
  cols = _overlap_add(_mix(dv, bt.T, 1, out_axis=4), 3, t.m)[:, :, :, :w]
  # Along H: (N, th, i, W, C), then fold.
  return _overlap_add(_mix(cols, bt.T, 0, out_axis=2), 1, t.m)[:, :h, :w]


def _kernel_tiles(w: Array, t: _Tiling) -> Array:
  """G w G^T: (a*a, C, O), rows ordered (u, v)."""
  u = _mix(_mix(w, t.g, 0), t.g, 1)
  return u.reshape(t.a * t.a, *w.shape[2:])


def _batched(lhs: Array, rhs: Array, lhs_contract: int, rhs_contract: int
             ) -> Array:
  """One matmul per tile position (the leading axis)."""
  return lax.dot_general(lhs, rhs, (((lhs_contract,), (rhs_contract,)),
                                    ((0,), (0,))))


def correlate(x: Array, w: Array) -> Array:
  """VALID stride-1 correlation (NHWC, HWIO) by F(4x4, kxk), k <= 5.

  Args:
    x: (N, H, W, C) input.
    w: (k, k, C, O) kernel.

  Returns:
    (N, H - k + 1, W - k + 1, O), ``lax.conv_general_dilated(x, w, (1, 1),
    'VALID')`` up to float rounding.
  """
  t = _Tiling(x.shape, w.shape[0])
  o = w.shape[-1]
  m_tiles = _batched(_input_tiles(x, t), _kernel_tiles(w, t), 2, 1)
  # A^T . A for all tiles at once: one (m*m, a*a) x (a*a, tiles*O) matmul.
  y = jnp.dot(jnp.asarray(np.kron(t.at, t.at), x.dtype),
              m_tiles.reshape(t.a * t.a, t.tiles * o))
  y = y.reshape(t.m, t.m, x.shape[0], t.th, t.tw, o)
  y = jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(
      x.shape[0], t.th * t.m, t.tw * t.m, o)
  return y[:, :t.ho, :t.wo]


def _output_tiles_transpose(dy: Array, t: _Tiling) -> Array:
  """The transpose of the output transform: (N, Ho, Wo, O) cotangent ->
  (a*a, tiles, O), one (a*a, m*m) x (m*m, tiles*O) matmul."""
  n, o = dy.shape[0], dy.shape[-1]
  dy = jnp.pad(dy, ((0, 0), (0, t.th * t.m - t.ho), (0, t.tw * t.m - t.wo),
                    (0, 0)))
  dy = dy.reshape(n, t.th, t.m, t.tw, t.m, o)
  dy = jnp.transpose(dy, (2, 4, 0, 1, 3, 5)).reshape(t.m * t.m,
                                                     t.tiles * o)
  dm = jnp.dot(jnp.asarray(np.kron(t.at, t.at).T, dy.dtype), dy)
  return dm.reshape(t.a * t.a, t.tiles, o)


def _input_grad(dy: Array, w: Array, x_shape: Sequence[int]) -> Array:
  """dL/dx of `correlate` on an input of `x_shape`, for cotangent dy."""
  t = _Tiling(x_shape, w.shape[0])
  dv = _batched(_output_tiles_transpose(dy, t), _kernel_tiles(w, t), 2, 2)
  return _input_tiles_transpose(dv, t, x_shape)  # dv: (a*a, tiles, C)


def _kernel_grad(x: Array, dy: Array, k: int) -> Array:
  """dL/dw (k, k, C, O) of `correlate` of x, for cotangent dy."""
  t = _Tiling(x.shape, k)
  du = _batched(_input_tiles(x, t), _output_tiles_transpose(dy, t), 1, 1)
  du = du.reshape(t.a, t.a, *du.shape[1:])  # (u, v, C, O)
  return _mix(_mix(du, t.g.T, 0), t.g.T, 1)


def correlate_vjp(x: Array, w: Array, dy: Array) -> tuple[Array, Array]:
  """(dL/dx, dL/dw) of `correlate` for the output cotangent dy.

  The input's tiles are transformed again here; inside one jitted step XLA
  merges that with the forward pass's identical computation.

  Args:
    x: (N, H, W, C) input of the forward pass.
    w: (k, k, C, O) kernel.
    dy: (N, Ho, Wo, O) cotangent of the output.

  Returns:
    dx (N, H, W, C) and dw (k, k, C, O).
  """
  return _input_grad(dy, w, x.shape), _kernel_grad(x, dy, w.shape[0])


# ---------------------------------------------------------------------------
# The full correlation (a stride-1 transposed convolution), by transposition.
# ---------------------------------------------------------------------------


def flip_kernel(w: Array) -> Array:
  """(k, k, C, O) -> (k, k, O, C), taps reversed: the kernel of the
  transposed problem (a convolution's input gradient)."""
  return jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))


def applies_full(x_shape: Sequence[int], w_shape: Sequence[int],
                 strides: int, dilation: int, pads, dtype) -> bool:
  """Whether `correlate_full` is used: the conditions of `applies` for the
  VALID problem it is the transpose of (x is that problem's output)."""
  k = w_shape[0]
  full = ((k - 1, k - 1), (k - 1, k - 1))
  if strides != 1 or dilation != 1 or tuple(map(tuple, pads)) != full:
    return False
  n, h, w, _ = x_shape
  _, k2, c, o = w_shape
  return applies((n, h + k - 1, w + k - 1, o), (k, k2, o, c), 1, 1,
                 ((0, 0), (0, 0)), dtype)


def correlate_full(x: Array, w: Array) -> Array:
  """Stride-1 correlation of x zero-padded by k - 1 on every side (a
  stride-1 VALID transposed convolution): (N, H, W, C) -> (N, H + k - 1,
  W + k - 1, O).

  It is the input gradient of the VALID correlation with the flipped
  kernel, with x as that problem's output cotangent, so the Winograd
  matmuls never meet the padding (MNIST G0 8 -> 12: 8x8 tiles of inputs,
  not 12x12 of padded outputs).

  Args:
    x: (N, H, W, C) input.
    w: (k, k, C, O) kernel.

  Returns:
    (N, H + k - 1, W + k - 1, O), up to float rounding
    ``lax.conv_general_dilated(x, w, (1, 1), [(k - 1, k - 1)] * 2)``.
  """
  k = w.shape[0]
  n, h, wd, _ = x.shape
  return _input_grad(x, flip_kernel(w), (n, h + k - 1, wd + k - 1, w.shape[-1]))


def correlate_full_vjp(x: Array, w: Array, dy: Array
                       ) -> tuple[Array, Array]:
  """(dL/dx, dL/dw) of `correlate_full` for the output cotangent dy: the
  VALID correlation of dy with the flipped kernel, and that problem's
  kernel gradient (input dy, cotangent x), flipped back.

  Args:
    x: (N, H, W, C) input of the forward pass.
    w: (k, k, C, O) kernel.
    dy: (N, H + k - 1, W + k - 1, O) cotangent of the output.

  Returns:
    dx (N, H, W, C) and dw (k, k, C, O).
  """
  return (correlate(dy, flip_kernel(w)),
          flip_kernel(_kernel_grad(dy, x, w.shape[0])))
