r"""Times sgan_jax.layers convolutions, impl='xla' against impl='fast'.

For every MNIST layer shape of the SGAN generator G0, discriminator D0 and
encoder, and for the whole G0 and D0 convolution stacks, this times one
jitted forward + backward pass (the sum of the outputs and its gradient with
respect to the input and all parameters) at batch 100. The value is returned
so that the forward convolution runs: the gradient of a loss linear in the
output does not need the output, and XLA would drop the forward pass.
Compilation is excluded; each figure is the median of several repeats, and
the two implementations are timed alternately so that load from other
processes on the machine hits both alike.

--cotangent=random differentiates sum(outputs * r) for a fixed random r
instead: the all-ones cotangent of a plain sum lets XLA constant-fold parts of
the backward pass that it cannot fold in training.

--no_mmap applies `sgan_jax.host_memory.keep_freed_memory()` (what the
training CLIs do by default): glibc serves every allocation from its heap,
never trims it and grows it 256 MiB at a time. XLA:CPU allocates each call's
buffers afresh, and without it they are new pages that fault in on first
touch; in a VM that can cost more than the arithmetic.

Prints one JSON line per figure, {"name": ..., "value": ..., "unit": "ms"}
with XLA's FLOP count of the call ("gflop") and the rate that gives
("gflops_per_s"), and per layer a ratio line (xla time / fast time, > 1
means 'fast' wins).

Usage:
  python benchmarks/conv_benchmark.py [--batch 100] [--repeats 7] \
      [--only g0_ct2 ...] [--cotangent sum|random] [--no_mmap]
"""

import argparse
from collections.abc import Callable, Sequence
import json
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgan_jax import host_memory
from sgan_jax import layers
from sgan_jax import xla_cpu_flags

IMPLS = ('xla', 'fast')


class _Stack(nn.Module):
  """A chain of conv layers with activations, as in the SGAN networks."""

  make_layers: Callable[[str], Sequence[nn.Module]]
  activation: Callable[[jax.Array], jax.Array]
  impl: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.make_layers(self.impl):
      x = self.activation(layer(x))
    return x


def _g0_layers(impl: str) -> list[nn.Module]:
  ct = layers.ConvTranspose
  return [
      ct(128, 5, 2, 'SAME', impl=impl),
      ct(64, 5, 1, 'VALID', impl=impl),
      ct(64, 5, 2, 'SAME', impl=impl),
      ct(1, 5, 1, 'VALID', impl=impl),
  ]


def _d0_layers(impl: str) -> list[nn.Module]:
  return [
      layers.Conv(32, 5, 2, 2, impl=impl),
      layers.Conv(64, 5, 2, 2, impl=impl),
      layers.Conv(128, 5, 2, 2, impl=impl),
  ]


# name -> (module factory taking impl, input shape without the batch axis).
CASES: dict[str, tuple[Callable[[str], nn.Module], tuple[int, ...]]] = {
    'g0_ct1_4to8_s2_128to128': (
        lambda i: layers.ConvTranspose(128, 5, 2, 'SAME', impl=i),
        (4, 4, 128),
    ),
    'g0_ct2_8to12_s1_128to64': (
        lambda i: layers.ConvTranspose(64, 5, 1, 'VALID', impl=i),
        (8, 8, 128),
    ),
    'g0_ct3_12to24_s2_64to64': (
        lambda i: layers.ConvTranspose(64, 5, 2, 'SAME', impl=i),
        (12, 12, 64),
    ),
    'g0_ct4_24to28_s1_64to1': (
        lambda i: layers.ConvTranspose(1, 5, 1, 'VALID', impl=i),
        (24, 24, 64),
    ),
    'd0_c1_28to14_s2_1to32': (
        lambda i: layers.Conv(32, 5, 2, 2, impl=i),
        (28, 28, 1),
    ),
    'd0_c2_14to7_s2_32to64': (
        lambda i: layers.Conv(64, 5, 2, 2, impl=i),
        (14, 14, 32),
    ),
    'd0_c3_7to4_s2_64to128': (
        lambda i: layers.Conv(128, 5, 2, 2, impl=i),
        (7, 7, 64),
    ),
    'enc_c1_28to24_s1_1to32': (
        lambda i: layers.Conv(32, 5, 1, 'VALID', impl=i),
        (28, 28, 1),
    ),
    'enc_c2_12to8_s1_32to32': (
        lambda i: layers.Conv(32, 5, 1, 'VALID', impl=i),
        (12, 12, 32),
    ),
    'g0_stack': (
        lambda i: _Stack(_g0_layers, nn.relu, i),
        (4, 4, 128),
    ),
    'd0_stack': (
        lambda i: _Stack(_d0_layers, nn.leaky_relu, i),
        (28, 28, 1),
    ),
}


def _compiled_fwd_bwd(module: nn.Module, params: Any, x: jax.Array,
                      cotangent: jax.Array | None):
  """Compiles value_and_grad(sum(module(x) [* cotangent])) w.r.t. (params,
  x); the value keeps the forward pass in the compiled call."""

  def loss(params, x, cotangent):
    y = module.apply(params, x)
    return jnp.sum(y if cotangent is None else y * cotangent)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(
      params, x, cotangent).compile()


def _flops(compiled) -> float:
  """XLA's FLOP count of a compiled call (0 when it gives none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def run(batch: int, repeats: int, only: Sequence[str],
        cotangent: str) -> None:
  """Times every case and prints the JSON lines.

  Args:
    batch: batch size.
    repeats: timed calls per implementation; the median is reported.
    only: substrings; when non-empty, only cases whose name has one run.
    cotangent: 'sum' (gradient of the sum of the outputs) or 'random'.
  """
  for name, (make, shape) in CASES.items():
    if only and not any(s in name for s in only):
      continue
    x = jax.random.normal(jax.random.key(0), (batch,) + shape, jnp.float32)
    # One parameter set for both: the layers are parameter-compatible.
    y, params = make('xla').init_with_output(jax.random.key(1), x)
    dy = (jax.random.normal(jax.random.key(2), y.shape)
          if cotangent == 'random' else None)
    fns = {impl: _compiled_fwd_bwd(make(impl), params, x, dy)
           for impl in IMPLS}
    times = {impl: [] for impl in IMPLS}
    for impl in IMPLS:  # Warm-up: first-call allocations and thread pools.
      jax.block_until_ready(fns[impl](params, x, dy))
    for _ in range(repeats):
      for impl in IMPLS:
        start = time.perf_counter()
        jax.block_until_ready(fns[impl](params, x, dy))
        times[impl].append(1e3 * (time.perf_counter() - start))
    medians = {impl: statistics.median(t) for impl, t in times.items()}
    for impl in IMPLS:
      flops = _flops(fns[impl])
      print(json.dumps({
          'name': f'{name}/{impl}',
          'value': round(medians[impl], 3),
          'unit': 'ms',
          'gflop': round(flops / 1e9, 3),
          'gflops_per_s': round(flops / 1e6 / medians[impl], 1),
      }), flush=True)
    print(json.dumps({
        'name': f'{name}/speedup_xla_over_fast',
        'value': round(medians['xla'] / medians['fast'], 2),
        'unit': 'x',
    }), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument(
      '--only', nargs='*', default=(), help='substrings of case names to run'
  )
  parser.add_argument('--cotangent', choices=('sum', 'random'), default='sum')
  parser.add_argument('--no_mmap', action='store_true',
                      help='keep large allocations on the reused malloc heap')
  parser.add_argument('--ynnpack_convolutions', action='store_true',
                      help="leave XLA:CPU's convolutions on YNNPACK (the "
                      'CLIs hand them to Eigen: sgan_jax/xla_cpu_flags.py)')
  args = parser.parse_args()
  eigen = (not args.ynnpack_convolutions
           and xla_cpu_flags.use_eigen_convolutions())
  if args.no_mmap and not host_memory.keep_freed_memory():
    raise RuntimeError('mallopt failed')
  print(json.dumps({
      'name': 'backend', 'value': jax.default_backend(),
      'unit': str(jax.devices()[0].device_kind),
      'eigen_convolutions': eigen,
  }), flush=True)
  run(args.batch, args.repeats, args.only, args.cotangent)


if __name__ == '__main__':
  main()
