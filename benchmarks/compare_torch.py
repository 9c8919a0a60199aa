"""Times our compiled MNIST steps against eager PyTorch, in one process.

  pip install torch==2.13.0   # the CPU wheel; the optional 'bench' extra
  python benchmarks/compare_torch.py --batch=100 --threads=2

For each phase (encoder, stack1, stack0, joint) it times one iteration of
`benchmarks/torch_reference.py` (the same MNIST networks, losses and update
structure in eager PyTorch) and of our compiled step (`jitted.compile_steps`
with `configs/mnist.py`, once per `--conv_impls` entry: 'fast' is our matmul
formulation, the CPU default; 'xla' XLA's own convolutions), on the same
synthetic batch. The timings are interleaved: every repeat times --iters steps
of each contender in turn (the order rotates), so machine-load changes hit all
of them alike; warm-up and compilation are excluded. Only ratios from one run
mean anything on a shared machine.

Prints one JSON line per figure ({"name", "value", "unit", ...}):
  torch_{phase}_steps_per_s          eager PyTorch, median over repeats;
  jax_{phase}_steps_per_s            ours with conv_impl 'fast';
  jax_{impl}_{phase}_steps_per_s     ours with any other impl (e.g. 'xla');
  torch_t{n}_{phase}_steps_per_s      PyTorch at --torch_extra_threads n;
  {phase}_jax_over_torch, {phase}_jax_{impl}_over_torch (and _over_torch_t{n})
      ratio of the medians (> 1: ours is faster), with the median, min and
      max of the per-repeat ratios;
  params_{net}                       parameter counts of both (must agree);
  loadavg_1m_start / _end            the machine's load around the run.
A markdown table follows on stderr unless --json.

Thread count: torch.set_num_threads(--threads). XLA:CPU sizes its thread pool
from the CPUs the process may use, so when --threads is below that number the
process is pinned to --threads CPUs (os.sched_setaffinity) before JAX starts;
both then run on the same cores.
"""

import hashlib
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_BATCH = flags.DEFINE_integer('batch', 100, 'Batch size of every step.')
_THREADS = flags.DEFINE_integer('threads', 2, 'torch.set_num_threads; the '
                                'process is pinned to this many CPUs when '
                                'fewer than available.')
_ITERS = flags.DEFINE_integer('iters', 10, 'Steps per timing (see '
                              '--timing_s).')
_TIMING_S = flags.DEFINE_float(
    'timing_s', 0.0, 'If > 0, overrides --iters per phase: the fewest steps '
    '(at least 1) that make the slowest contender\'s timing last this long, '
    'judged from its last warm-up step.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timings per contender and '
                                'phase (median).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps per contender '
                               'and phase.')
_PHASES = flags.DEFINE_list('phases', ['encoder', 'stack1', 'stack0',
                                       'joint'], 'Phases to time.')
_IMPLS = flags.DEFINE_list('conv_impls', ['fast', 'xla'],
                           "model.conv_impl values of our steps ('fast', "
                           "'xla').")
_TORCH_ADAM = flags.DEFINE_enum('torch_adam', 'default',
                                ['default', 'foreach', 'fused'],
                                "torch.optim.Adam implementation ('default' "
                                'is the per-tensor loop on CPU).')
_TORCH_EXTRA = flags.DEFINE_list(
    'torch_extra_threads', [], 'Also time eager PyTorch at these thread '
    'counts (contenders torch_t{n}; torch.set_num_threads is switched around '
    'each of their timings). On a loaded machine OpenMP with 2 threads can '
    'be much slower than 1, which would flatter our ratios.')
_SETTLE_S = flags.DEFINE_float(
    'settle_s', 0.0, 'Idle seconds before each timing, so that the previous '
    "contender's worker threads (OpenMP, XLA's pool) have stopped spinning "
    'and do not compete with the next one.')
_KEEP = flags.DEFINE_bool(
    'keep_freed_memory', True, 'glibc keeps freed memory mapped '
    '(sgan_jax/host_memory.py, the training CLIs\' default). Process-wide, '
    'so it applies to both PyTorch and JAX.')
_EIGEN = flags.DEFINE_bool(
    'eigen_convolutions', True, 'XLA:CPU convolutions on Eigen, as the '
    'training CLIs do by default (sgan_jax/xla_cpu_flags.py).')
_ASYNC = flags.DEFINE_bool(
    'cpu_async_dispatch', False, "JAX's asynchronous dispatch of our steps; "
    'off, as the training CLIs run them (sgan_jax/xla_cpu_flags.py). '
    'JAX-only: PyTorch is not affected.')
_JSON = flags.DEFINE_bool('json', False, 'Print only the JSON lines.')

_SHAPE = (28, 28, 1)


def emit(name: str, value, unit: str, **extra) -> None:
  if isinstance(value, float):
    value = round(value, 4)
  print(json.dumps({'name': name, 'value': value, 'unit': unit, **extra}),
        flush=True)


def note(msg: str) -> None:
  if not _JSON.value:
    print(msg, file=sys.stderr, flush=True)


def _label(name: str) -> str:
  """JSON name prefix: 'jax' for the CPU default conv_impl 'fast'."""
  return 'jax' if name == 'jax_fast' else name


def _source_version() -> dict[str, str]:
  """The code being timed: git HEAD, whether sgan_jax/ or the benchmark
  differ from it, and a digest of the working-tree sgan_jax/*.py (other
  people edit it while benchmarks run)."""
  pkg = os.path.join(_ROOT, 'sgan_jax')
  digest = hashlib.sha1()
  for name in sorted(os.listdir(pkg)):
    if name.endswith('.py'):
      with open(os.path.join(pkg, name), 'rb') as f:
        digest.update(name.encode() + b'\0' + f.read())
  info = {'sgan_jax_sha1': digest.hexdigest()[:12]}
  try:
    git = lambda *a: subprocess.run(
        ['git', '-C', _ROOT, *a], capture_output=True, text=True,
        check=True, timeout=30).stdout.strip()
    info['git_head'] = git('rev-parse', '--short', 'HEAD')
    info['dirty'] = git('status', '--porcelain', '--', 'sgan_jax',
                        'configs', 'benchmarks/torch_reference.py',
                        'benchmarks/compare_torch.py').replace('\n', '; ')
  except (OSError, subprocess.SubprocessError):
    pass
  return info


def _pin_threads(threads: int) -> str:
  """Restricts the process to `threads` CPUs if it may use more."""
  cpus = sorted(os.sched_getaffinity(0))
  if threads < len(cpus):
    os.sched_setaffinity(0, cpus[:threads])
    return f'pinned to CPUs {cpus[:threads]} of {cpus}'
  if threads > len(cpus):
    return (f'WARNING: --threads={threads} but only {len(cpus)} CPUs: '
            f'XLA uses {len(cpus)}')
  return f'all {len(cpus)} CPUs'


def _mnist_config(conv_impl: str, batch: int):
  spec = importlib.util.spec_from_file_location(
      'mnist_config', os.path.join(_ROOT, 'configs', 'mnist.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config()
  config.data.batch_size = batch
  config.model.conv_impl = conv_impl
  config.schedule.g_steps = 1
  config.schedule.g_steps_by_d_loss = False
  return config


class _JaxContender:
  """Our compiled steps for one conv_impl, with their own state."""

  def __init__(self, conv_impl: str, batch_np: dict[str, np.ndarray]):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from sgan_jax import architectures  # pylint: disable=g-import-not-at-top
    from sgan_jax import jitted  # pylint: disable=g-import-not-at-top
    from sgan_jax import sharding  # pylint: disable=g-import-not-at-top
    from sgan_jax import state as state_lib  # pylint: disable=g-import-not-at-top
    self._jax = jax
    config = _mnist_config(conv_impl, batch_np['label'].shape[0])
    mesh = sharding.make_mesh()
    models = architectures.build_models(config, 10, _SHAPE)
    self._compiled = jitted.compile_steps(models, config, mesh)
    repl = sharding.replicated(mesh)
    self.root = jax.device_put(jax.random.key(config.seed), repl)
    init = jax.jit(lambda k: state_lib.create_state(
        models, config, k, jnp.zeros(_SHAPE)), out_shardings=repl)
    self.st = init(self.root)
    self.batch = jax.device_put(batch_np, sharding.batch_sharding(mesh))
    self._exe = {}

  def param_counts(self) -> dict[str, int]:
    size = lambda t: int(sum(x.size for x in self._jax.tree.leaves(t)))
    st = self.st
    return {'E': size(st.encoder.params),
            'G0': size(st.stacks[0].g.params),
            'D0': size(st.stacks[0].d.params),
            'G1': size(st.stacks[1].g.params),
            'D1': size(st.stacks[1].d.params)}

  def compile(self, phase: str, compiler_options: dict | None = None
              ) -> float:
    """Compiles `phase` (with XLA `compiler_options` on top of the step's
    own, `xla_cpu_flags.compiler_options`); returns the seconds taken."""
    t = time.perf_counter()
    self._exe[phase] = self._compiled[phase].lower(
        self.st, self.batch, self.root).compile(
            compiler_options=compiler_options)
    return time.perf_counter() - t

  def run(self, phase: str, n: int) -> None:
    exe = self._exe[phase]
    st, m = self.st, None
    for _ in range(n):
      st, m = exe(st, self.batch, self.root)
    self._jax.block_until_ready((st, m))
    self.st = st


class _TorchContender:
  """The eager reference; `threads` None: leave torch's setting alone."""

  def __init__(self, batch_np: dict[str, np.ndarray], adam_impl: str,
               threads: int | None = None):
    import torch  # pylint: disable=g-import-not-at-top
    import torch_reference  # pylint: disable=g-import-not-at-top
    self._torch = torch
    self.threads = threads
    self.model = torch_reference.TorchSGAN(seed=0, adam_impl=adam_impl)
    self.images = torch.from_numpy(batch_np['image']).permute(
        0, 3, 1, 2).contiguous()
    self.labels = torch.from_numpy(batch_np['label']).long()

  def param_counts(self) -> dict[str, int]:
    return self.model.param_counts()

  def compile(self, phase: str) -> float:
    del phase
    return 0.0

  def run(self, phase: str, n: int) -> None:
    fn = self.model.step_fn(phase)
    saved = self._torch.get_num_threads()
    if self.threads:
      self._torch.set_num_threads(self.threads)
    try:
      for _ in range(n):
        fn(self.images, self.labels)
    finally:
      self._torch.set_num_threads(saved)


def main(argv):
  del argv
  threads = _THREADS.value
  where = _pin_threads(threads)
  from sgan_jax import host_memory  # pylint: disable=g-import-not-at-top
  kept = host_memory.keep_freed_memory() if _KEEP.value else False
  from sgan_jax import xla_cpu_flags  # pylint: disable=g-import-not-at-top
  eigen = xla_cpu_flags.use_eigen_convolutions() if _EIGEN.value else False
  inline = (False if _ASYNC.value
            else xla_cpu_flags.run_steps_on_calling_thread())
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  import jax  # pylint: disable=g-import-not-at-top

  b = _BATCH.value
  r = np.random.default_rng(0)
  batch_np = {'image': r.integers(0, 256, (b, *_SHAPE), dtype=np.uint8),
              'label': (np.arange(b) % 10).astype(np.int32)}
  load0 = os.getloadavg()[0]
  common = dict(batch=b, threads=threads, keep_freed_memory=kept,
                eigen_convolutions=eigen, steps_on_calling_thread=inline,
                torch=torch.__version__,
                jax=jax.__version__, device=jax.devices()[0].device_kind)
  note(f'batch {b}, torch {torch.__version__} with '
       f'{torch.get_num_threads()} threads, jax {jax.__version__} on '
       f'{jax.device_count()} {jax.devices()[0].device_kind} device(s), '
       f'{where}; load {os.getloadavg()}')
  emit('loadavg_1m_start', load0, 'load')
  version = _source_version()
  emit('source', version.get('git_head', ''), 'git', **version)
  note(f'source: {version}')

  contenders = {'torch': _TorchContender(batch_np, _TORCH_ADAM.value)}
  for t in _TORCH_EXTRA.value:
    contenders[f'torch_t{int(t)}'] = _TorchContender(
        batch_np, _TORCH_ADAM.value, threads=int(t))
  for impl in _IMPLS.value:
    contenders[f'jax_{impl}'] = _JaxContender(impl, batch_np)

  # The same networks on both sides.
  counts = {k: c.param_counts() for k, c in contenders.items()}
  ref = counts['torch']
  for net, n in ref.items():
    others = {k: v[net] for k, v in counts.items() if k.startswith('jax_')}
    emit(f'params_{net}', n, 'params', **others,
         match=all(v == n for v in others.values()))
    if any(v != n for v in others.values()):
      note(f'WARNING: {net} has {n} params in torch, {others} in jax')

  names = list(contenders)
  torch_names = [n for n in names if n.startswith('torch')]
  jax_names = [n for n in names if n.startswith('jax_')]
  results = {}
  for phase in _PHASES.value:
    slowest = 0.0
    for name in names:
      sec = contenders[name].compile(phase)
      if sec:
        emit(f'{name}_{phase}_compile_s', sec, 's', **common)
      for _ in range(max(_WARMUP.value, 1 if _TIMING_S.value > 0 else 0)):
        t = time.perf_counter()
        contenders[name].run(phase, 1)
        last = time.perf_counter() - t
      if _TIMING_S.value > 0:
        slowest = max(slowest, last)
    iters = (max(1, math.ceil(_TIMING_S.value / slowest))
             if _TIMING_S.value > 0 else _ITERS.value)
    times = {name: [] for name in names}
    for rep in range(_REPEATS.value):
      k = rep % len(names)
      for name in names[k:] + names[:k]:
        if _SETTLE_S.value > 0:
          time.sleep(_SETTLE_S.value)
        t = time.perf_counter()
        contenders[name].run(phase, iters)
        times[name].append((time.perf_counter() - t) / iters)
    rate = {n: 1.0 / statistics.median(ts) for n, ts in times.items()}
    results[phase] = rate
    for name in names:
      impl = name[len('jax_'):] if name in jax_names else None
      if impl:
        extra = dict(conv_impl=impl)
      else:
        extra = dict(adam=_TORCH_ADAM.value,
                     torch_threads=contenders[name].threads or threads)
      emit(f'{_label(name)}_{phase}_steps_per_s', rate[name], 'steps/s',
           ms_per_step=round(1e3 / rate[name], 3), iters=iters,
           repeats=_REPEATS.value, **extra, **common)
    for tname in torch_names:
      for name in jax_names:
        paired = [tt / tj for tt, tj in zip(times[tname], times[name])]
        emit(f'{phase}_{_label(name)}_over_{tname}', rate[name] / rate[tname],
             'x', paired_median=round(statistics.median(paired), 4),
             paired_min=round(min(paired), 4),
             paired_max=round(max(paired), 4), **common)
    note(f'  {phase} ({iters} steps x {_REPEATS.value} repeats): ' +
         ', '.join(f'{n} {rate[n]:.2f}/s' for n in names))
  load1 = os.getloadavg()[0]
  emit('loadavg_1m_end', load1, 'load')

  pairs = [(j, t) for t in torch_names for j in jax_names]
  header = ('| phase | ' + ' | '.join(f'{n} steps/s' for n in names) +
            ' | ' + ' | '.join(f'{j} / {t}' for j, t in pairs) + ' |')
  lines = [header, '| --- ' + '| ---: ' * (len(names) + len(pairs)) + '|']
  for phase, rate in results.items():
    lines.append(
        f'| {phase} | ' + ' | '.join(f'{rate[n]:.2f}' for n in names) +
        ' | ' + ' | '.join(f'{rate[j] / rate[t]:.2f}x' for j, t in pairs) +
        ' |')
  note('\n'.join(lines))
  note(f'load average (1 min) {load0:.2f} at start, {load1:.2f} at end')


if __name__ == '__main__':
  app.run(main)
