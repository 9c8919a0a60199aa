"""Data-parallel scaling of the training steps over fake CPU devices.

  python benchmarks/scaling_benchmark.py [--config=configs/mnist.py]
      [--devices=1,2,4,8] [--phases=stack0,joint] [--batch=64]

For each device count N, runs `step_benchmark.py --devices=N` in a fresh
subprocess whose XLA_FLAGS make the host CPU N devices (the flag is read once,
when JAX starts, so every N needs its own process), and prints one JSON line
per figure:

  {phase}_steps_per_s  (devices=N) as measured by step_benchmark.py, plus
      `speedup`: steps/s over the smallest N's (ideal: N / N_min).
  {phase}_gflops_per_s  XLA's FLOP count of the step times steps/s.

The fake devices share the host's cores, so these figures show the cost of
partitioning a step (smaller per-device matmuls, the all-reduce, more XLA
threads than cores), not real multi-device speed-ups: on a 2-core machine
they are flat or fall with N. On hardware with N real devices use
step_benchmark.py directly. Only JAX's CPU backend is used (JAX_PLATFORMS=cpu),
even where an accelerator exists.
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)

_CONFIG = flags.DEFINE_string(
    'config', 'configs/mnist.py', 'Config file (and preset), relative to the '
    'repository, e.g. configs/mnist.py or configs/mnist.py:tiny.')
_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4', '8'],
                             'Device counts to time.')
_PHASES = flags.DEFINE_list('phases', ['stack0', 'joint'], 'Phases to time.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Global batch; a multiple of '
                              'every device count.')
_ITERS = flags.DEFINE_integer('iters', 5, 'Steps per timing.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timings per figure (median).')
_TIMEOUT = flags.DEFINE_integer('timeout', 1200, 'Seconds per device count.')


def _env(devices: int) -> dict[str, str]:
  """This process's environment with `devices` fake CPU devices."""
  kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
          if not f.startswith('--xla_force_host_platform_device_count')]
  kept.append(f'--xla_force_host_platform_device_count={devices}')
  return dict(os.environ, XLA_FLAGS=' '.join(kept), JAX_PLATFORMS='cpu',
              TF_CPP_MIN_LOG_LEVEL='2')


def _step_benchmark(devices: int) -> list[dict]:
  """The JSON records of one step_benchmark.py run on `devices` devices."""
  # step_benchmark also times sampling; 10 per class and a multiple of every
  # device count keeps that negligible.
  num_samples = 10 * 8
  cmd = [sys.executable, os.path.join(_HERE, 'step_benchmark.py'),
         f'--config={_CONFIG.value}', f'--devices={devices}',
         f'--phases={",".join(_PHASES.value)}', f'--batch={_BATCH.value}',
         f'--iters={_ITERS.value}', f'--repeats={_REPEATS.value}',
         f'--num_samples={num_samples}', '--json']
  res = subprocess.run(cmd, cwd=_REPO, env=_env(devices), capture_output=True,
                       text=True, timeout=_TIMEOUT.value, check=False)
  if res.returncode:
    sys.exit(f'error: step_benchmark.py --devices={devices} failed '
             f'(exit {res.returncode}):\n{res.stderr[-3000:]}')
  return [json.loads(line) for line in res.stdout.splitlines()
          if line.startswith('{')]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  counts = sorted(int(n) for n in _DEVICES.value)
  bad = [n for n in counts if n < 1 or _BATCH.value % n]
  if bad:
    raise app.UsageError(f'--batch={_BATCH.value} must be a positive '
                         f'multiple of every device count; not of {bad}')
  wanted = {f'{p}_{kind}' for p in _PHASES.value
            for kind in ('steps_per_s', 'gflops_per_s')}
  base = {}  # steps/s of each phase on the smallest device count.
  for n in counts:
    for record in _step_benchmark(n):
      name = record['name']
      if name not in wanted:
        continue
      if name.endswith('_steps_per_s'):
        base.setdefault(name, record['value'])
        record['speedup'] = round(record['value'] / base[name], 3)
      print(json.dumps(record), flush=True)


if __name__ == '__main__':
  app.run(main)
