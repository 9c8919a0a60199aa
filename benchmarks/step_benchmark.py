"""Times the compiled training steps of a config on synthetic batches.

  python benchmarks/step_benchmark.py --config=configs/mnist.py [--batch=100]
  python benchmarks/step_benchmark.py --config=configs/cifar10.py --json

Prints one JSON line per figure ({"name", "value", "unit"}):
  {encoder,stack0,stack1,...,joint}_steps_per_s  one full iteration of that
      phase (D update + G update(s)) per step, compile excluded, median of
      --repeats timings of --iters steps;
  {phase}_gflops_per_s  XLA's own FLOP count of the compiled step
      (`cost_analysis()`) times steps/s;
  compile_s  lowering + compiling every step, all together (as the training
      loop does, `jitted.compile_ahead`), into an empty persistent
      compilation cache;
  compile_cached_s  the same again, loaded from that cache (what a rerun or
      resume of the CLIs costs, `cli.py`);
  sample_images_per_s  top-down sampling of --num_samples images,
      --sample_batch per call (default: the `sample` and `evaluate` CLIs'
      --batch_size), compile excluded;
  sample_compile_s  compiling that sampler (not part of compile_s);
  input_batches_per_s  the host input pipeline alone (BatchSampler +
      prefetch thread + transfer to the devices) on a synthetic uint8 train
      split of the dataset's size: the loop needs steps/s of it at most;
  peak_gflops_per_s  a square matmul of the same dtype, timed in the same run
      (best of 7);
  mfu  the best step's GFLOP/s over that peak;
  {phase}_scan_steps_per_s  with --scan=K: K steps per call under lax.scan.
The G-step heuristic is switched off so every step does 1 D + 1 G update and
the FLOP count is exact. Imports nothing from TensorFlow: synthetic data.
"""

import json
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgan_jax import architectures  # pylint: disable=g-import-not-at-top
from sgan_jax import batching
from sgan_jax import host_memory
from sgan_jax import jitted
from sgan_jax import rng
from sgan_jax import sampling
from sgan_jax import sharding
from sgan_jax import state as state_lib
from sgan_jax import xla_cpu_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.',
                                          lock_config=False)
_BATCH = flags.DEFINE_integer('batch', None, 'Global batch (default: the '
                              "config's).")
_ITERS = flags.DEFINE_integer('iters', 20, 'Steps per timing.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timings per figure (median).')
_NUM_SAMPLES = flags.DEFINE_integer(
    'num_samples', 10000, 'Images sampled: a multiple of the classes, or 0 '
    'to skip the sampling figures.')
# On the 2-core CPU of RESULTS.md, 10,000 MNIST images took 6.3 s in calls
# of 1,000 and 11.2 s in one call of 10,000 (same process; compile 5 vs
# 63 s); accelerators favour the larger calls.
_SAMPLE_BATCH = flags.DEFINE_integer(
    'sample_batch', 1000, 'Images per sampling call (rounded up to a '
    'multiple of the devices).')
_DEVICES = flags.DEFINE_integer('devices', None, 'Use the first N devices.')
_JSON = flags.DEFINE_bool('json', False, 'Print only the JSON lines.')
_KEEP = flags.DEFINE_bool(
    'keep_freed_memory', True, 'glibc keeps freed memory mapped, as the '
    'training CLIs do by default (sgan_jax/host_memory.py).')
_EIGEN = flags.DEFINE_bool(
    'eigen_convolutions', True, 'XLA:CPU convolutions on Eigen, as the '
    'training CLIs do by default (sgan_jax/xla_cpu_flags.py).')
_ASYNC = flags.DEFINE_bool(
    'cpu_async_dispatch', False, "JAX's asynchronous dispatch of "
    'single-device CPU steps; off, as the training CLIs run them '
    '(sgan_jax/xla_cpu_flags.py).')
_PHASES = flags.DEFINE_list('phases', None, 'Subset of phases to time.')
_SCAN = flags.DEFINE_integer(
    'scan', 0, 'Also time K steps per call as one lax.scan over K batches '
    '({phase}_scan_steps_per_s): whether a multi-step knob would pay.')

_SHAPES = {'mnist': (28, 28, 1), 'cifar10': (32, 32, 3),
           'svhn_cropped': (32, 32, 3)}
_TRAIN_SIZES = {'mnist': 60000, 'cifar10': 50000, 'svhn_cropped': 73257}


def emit(name: str, value: float, unit: str, **extra) -> None:
  print(json.dumps({'name': name, 'value': round(float(value), 4),
                    'unit': unit, **extra}), flush=True)


def note(msg: str) -> None:
  if not _JSON.value:
    print(msg, file=sys.stderr, flush=True)


def time_fn(fn, repeats: int) -> float:
  """Median wall time of fn() over `repeats` calls (fn blocks)."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def time_scanned(fn, st, batch, root, name: str, common: dict):
  """Emits {name}_scan_steps_per_s: K = --scan steps per call, one lax.scan
  over K copies of the batch. Returns the advanced state."""
  k = _SCAN.value
  batches = jax.tree.map(lambda x: jnp.stack([x] * k), batch)
  scanned = jax.jit(
      lambda s, bs, key: jax.lax.scan(lambda c, b: fn(c, b, key), s, bs),
      donate_argnums=0)
  st, m = scanned(st, batches, root)  # compile
  jax.block_until_ready(m)

  def run():
    nonlocal st
    st, m = scanned(st, batches, root)
    jax.block_until_ready((st, m))

  sec = time_fn(run, _REPEATS.value) / k
  emit(f'{name}_scan_steps_per_s', 1.0 / sec, 'steps/s', scan=k, **common)
  return st


def peak_gflops(dtype) -> float:
  """A square matmul of the step's dtype, big enough to saturate the chip.

  The best of 7 timings, not the median: a peak is the fastest the chip
  was seen to go, and on a shared machine a median taken while a neighbour
  is busy understates it (MFU above 1 in one run on the 2-core VM).
  """
  n = 4096 if jax.default_backend() != 'cpu' else 1024
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  reps = 20 if jax.default_backend() != 'cpu' else 5
  times = []
  for _ in range(7):
    t = time.perf_counter()
    jax.block_until_ready([f(a) for _ in range(reps)])
    times.append(time.perf_counter() - t)
  return 2 * n**3 * reps / min(times) / 1e9


def main(argv):
  del argv
  if _SAMPLE_BATCH.value <= 0:
    raise app.UsageError(f'--sample_batch must be positive, got '
                         f'{_SAMPLE_BATCH.value}')
  # Checked before the minutes of compiling, not after.
  if _NUM_SAMPLES.value < 0 or _NUM_SAMPLES.value % 10:
    raise app.UsageError(f'--num_samples must be 0 or a positive multiple '
                         f'of the 10 classes, got {_NUM_SAMPLES.value}')
  kept = host_memory.keep_freed_memory() if _KEEP.value else False
  eigen = xla_cpu_flags.use_eigen_convolutions() if _EIGEN.value else False
  inline = (False if _ASYNC.value
            else xla_cpu_flags.run_steps_on_calling_thread())
  config = _CONFIG.value
  if _BATCH.value:
    config.data.batch_size = _BATCH.value
  config.schedule.g_steps_by_d_loss = False
  config.schedule.g_steps = 1
  shape = _SHAPES[config.data.name]
  devices = jax.devices()[:_DEVICES.value] if _DEVICES.value else None
  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(config.data.batch_size, mesh)
  models = architectures.build_models(config, 10, shape)
  compiled = jitted.compile_steps(models, config, mesh)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  root = jax.device_put(jax.random.key(config.seed), repl)
  init = jax.jit(lambda k: state_lib.create_state(
      models, config, k, jnp.zeros(shape)), out_shardings=repl)
  st = init(root)
  b = config.data.batch_size
  r = np.random.default_rng(0)
  batch = jax.device_put(
      {'image': r.integers(0, 256, (b, *shape), dtype=np.uint8),
       'label': (np.arange(b) % 10).astype(np.int32)}, batch_sh)
  note(f'{jax.device_count()} x {jax.devices()[0].device_kind}, '
       f'{mesh.devices.size} used, batch {b}, dtype {config.dtype}')
  common = dict(device=jax.devices()[0].device_kind,
                devices=int(mesh.devices.size), batch=b,
                config=config.data.name, keep_freed_memory=kept,
                eigen_convolutions=eigen, steps_on_calling_thread=inline)

  phases = _PHASES.value or (['encoder'] + [
      f'stack{i}' for i in range(models.num_stacks)] + ['joint'])
  fns = {name: compiled[name] for name in phases}
  with tempfile.TemporaryDirectory() as cache:
    # An empty cache of our own: a user's warm one would hide the compile.
    compilation_cache.set_cache_dir(cache)
    t = time.perf_counter()
    executables = jitted.compile_ahead(fns, (st, batch, root))
    emit('compile_s', time.perf_counter() - t, 's', **common)
    jax.clear_caches()  # Else the second lowering comes from memory.
    t = time.perf_counter()
    jitted.compile_ahead(fns, (st, batch, root))
    emit('compile_cached_s', time.perf_counter() - t, 's', **common)
    compilation_cache.set_cache_dir(None)
    compilation_cache.reset_cache()
  best = (0.0, None)
  for name in phases:
    fn = executables[name]
    cost = fn.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get('flops', 0.0)) if cost else 0.0
    st, m = fn(st, batch, root)  # warm-up
    jax.block_until_ready(m)

    def run():
      nonlocal st
      for _ in range(_ITERS.value):
        st, m = fn(st, batch, root)
      jax.block_until_ready((st, m))

    sec = time_fn(run, _REPEATS.value) / _ITERS.value
    emit(f'{name}_steps_per_s', 1.0 / sec, 'steps/s', **common)
    # cost_analysis is per device (per SPMD partition); scale to the mesh.
    gflops = flops * mesh.devices.size / sec / 1e9
    emit(f'{name}_gflops_per_s', gflops, 'GFLOP/s',
         gflop_per_step=round(flops * mesh.devices.size / 1e9, 4), **common)
    note(f'  {name}: {1e3 * sec:.2f} ms/step')
    if _SCAN.value > 0:
      st = time_scanned(compiled[name], st, batch, root, name, common)
    if gflops > best[0]:
      best = (gflops, name)

  n = _NUM_SAMPLES.value
  if n:
    labels = sampling.balanced_labels(n, models.num_classes)
    key = rng.eval_key(root)
    chunk = min(n, _SAMPLE_BATCH.value)
    chunk = -(-chunk // mesh.devices.size) * mesh.devices.size
    t = time.perf_counter()
    sampling.generate(compiled['sample'], st, labels[:chunk], key,
                      batch_size=chunk, sharding=batch_sh)
    emit('sample_compile_s', time.perf_counter() - t, 's', sample_batch=chunk,
         **common)
    sec = time_fn(lambda: sampling.generate(
        compiled['sample'], st, labels, key, batch_size=chunk,
        sharding=batch_sh), 3)
    emit('sample_images_per_s', n / sec, 'images/s', sample_batch=chunk,
         **common)
    note(f'  sampling: {sec:.2f} s for {n} images, {chunk} per call')

  arrays = {'image': r.integers(0, 256, (_TRAIN_SIZES[config.data.name],
                                          *shape), dtype=np.uint8),
            'label': r.integers(0, 10, _TRAIN_SIZES[config.data.name],
                                dtype=np.int32)}
  sampler = batching.BatchSampler(arrays, b, seed=0)
  n_batches = 200

  def consume():
    for _, local in batching.iterate_batches(sampler, 0, n_batches):
      jax.block_until_ready(sharding.shard_batch(local, mesh))

  emit('input_batches_per_s', n_batches / time_fn(consume, 3), 'batches/s',
       **common)

  dtype = jnp.bfloat16 if config.dtype == 'bfloat16' else jnp.float32
  # A CPU's devices (--xla_force_host_platform_device_count) share its
  # cores, and one device's matmul already uses them all (2-core VM:
  # 1.93 cores busy, the speed of torch on 2 threads), so their peak is
  # one device's; accelerators add theirs.
  peak = peak_gflops(dtype) * (
      1 if jax.default_backend() == 'cpu' else mesh.devices.size)
  emit('peak_gflops_per_s', peak, 'GFLOP/s', dtype=str(jnp.dtype(dtype)),
       **common)
  emit('mfu', best[0] / peak, 'fraction', step=best[1], **common)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
