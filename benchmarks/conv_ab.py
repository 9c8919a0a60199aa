r"""In-process A/B of `sgan_jax/conv_cpu.py` at a git revision against the
tree, or of XLA compile options.

  python benchmarks/conv_ab.py --rev=2bcc348 --phases=encoder,stack0 \
      [--timings=11] [--batch=100]
  python benchmarks/conv_ab.py --rev=HEAD --phases=stack0,joint \
      --options_a='{"xla_backend_optimization_level": 3}'

--batch and --phases are compare_torch.py's flags (its MNIST contender is
reused; its other flags are ignored here).

Compiles the MNIST training steps twice in one process, once with the
`conv_cpu` module of --rev (A) and once with the working tree's (B), and
times them alternately (order flipped every timing), so that load from
other processes and the VM's drift hit both alike. This resolves changes of
a few per cent, which separate runs of `compare_torch.py` on a shared 2-core
VM cannot. Run it with --rev=HEAD and an unchanged tree first: the A/A ratio
and its range are this machine's noise floor.

--options_a / --options_b (JSON objects) are XLA options for compiling A /
B, on top of the steps' own (`xla_cpu_flags.compiler_options`): e.g. an
optimization level or `xla_cpu_experimental_ynn_fusion_type`. XLA reads
most flags once per process, but these apply to one compilation, so they
too are compared inside one process.

Prints one JSON line per phase: {"name": "{phase}_a_over_b", "value": the
median of the per-timing ratios A time / B time (> 1: B is faster),
"min", "max", "a_ms", "b_ms", "a_compile_s", "b_compile_s"}.
"""

import json
import os
import statistics
import subprocess
import sys
import time
import types

from absl import app
from absl import flags
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Defines --batch and --phases, used here too; imports nothing from JAX.
import compare_torch  # pylint: disable=g-import-not-at-top
from sgan_jax import host_memory  # pylint: disable=g-import-not-at-top
from sgan_jax import xla_cpu_flags  # pylint: disable=g-import-not-at-top

_REV = flags.DEFINE_string('rev', 'HEAD', 'git revision of conv_cpu.py '
                           'for A.')
_TIMINGS = flags.DEFINE_integer('timings', 11, 'Alternating timings per '
                                'phase (each times both versions).')
_OPTIONS_A = flags.DEFINE_string('options_a', '{}', 'XLA compile options '
                                 'of A, a JSON object.')
_OPTIONS_B = flags.DEFINE_string('options_b', '{}', 'XLA compile options '
                                 'of B, a JSON object.')

# Steps per timing: about a second each on 2 cores.
_STEPS = {'encoder': 20, 'stack1': 30}


def _module_at(rev: str) -> types.ModuleType:
  """sgan_jax/conv_cpu.py as of `rev`, loaded as a separate module."""
  src = subprocess.run(
      ['git', '-C', _ROOT, 'show', f'{rev}:sgan_jax/conv_cpu.py'],
      capture_output=True, text=True, check=True).stdout
  module = types.ModuleType(f'conv_cpu_at_{rev}')
  code = compile(src, f'conv_cpu@{rev}', 'exec')
  exec(code, module.__dict__)  # pylint: disable=exec-used
  return module


def main(argv):
  del argv
  xla_cpu_flags.use_eigen_convolutions()
  xla_cpu_flags.run_steps_on_calling_thread()
  host_memory.keep_freed_memory()
  from sgan_jax import conv_cpu  # pylint: disable=g-import-not-at-top
  from sgan_jax import layers  # pylint: disable=g-import-not-at-top

  n = flags.FLAGS.batch
  phases = flags.FLAGS.phases
  rs = np.random.RandomState(0)
  batch = {'image': rs.rand(n, 28, 28, 1).astype(np.float32),
           'label': rs.randint(0, 10, n).astype(np.int32)}
  options = {}
  for name, flag in (('A', _OPTIONS_A), ('B', _OPTIONS_B)):
    options[name] = json.loads(flag.value)
    if not isinstance(options[name], dict):
      raise app.UsageError(f'--options_{name.lower()} must be a JSON object, '
                           f'got {flag.value!r}')
  contenders, compile_s = {}, {}
  # layers.py calls conv_cpu.conv at trace time, so swapping the module
  # before compiling gives each contender its own convolutions.
  for name, module in (('A', _module_at(_REV.value)), ('B', conv_cpu)):
    layers.conv_cpu = module
    try:
      contender = getattr(compare_torch, '_JaxContender')('fast', batch)
      for phase in phases:
        compile_s[name, phase] = contender.compile(phase, options[name])
    finally:
      layers.conv_cpu = conv_cpu
    contenders[name] = contender

  for phase in phases:
    steps = _STEPS.get(phase, 2)
    for contender in contenders.values():
      contender.run(phase, steps)  # warm-up
    ms = {name: [] for name in contenders}
    for t in range(_TIMINGS.value):
      order = ['A', 'B'] if t % 2 == 0 else ['B', 'A']
      for name in order:
        start = time.perf_counter()
        contenders[name].run(phase, steps)
        ms[name].append(1e3 * (time.perf_counter() - start) / steps)
    ratios = [a / b for a, b in zip(ms['A'], ms['B'])]
    print(json.dumps({
        'name': f'{phase}_a_over_b',
        'value': round(statistics.median(ratios), 3), 'unit': 'x',
        'min': round(min(ratios), 3), 'max': round(max(ratios), 3),
        'a_ms': round(statistics.median(ms['A']), 2),
        'b_ms': round(statistics.median(ms['B']), 2),
        'a_compile_s': round(compile_s['A', phase], 2),
        'b_compile_s': round(compile_s['B', phase], 2), 'rev': _REV.value,
        'options_a': options['A'], 'options_b': options['B'],
        'timings': _TIMINGS.value, 'batch': n}), flush=True)


if __name__ == '__main__':
  app.run(main)
