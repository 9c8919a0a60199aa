"""benchmarks/step_benchmark.py: the figures it promises, on a tiny config.

Speed itself is not asserted (that is the benchmark's job); this checks that
every figure the performance issue names is printed as a JSON line with a
finite, positive value, on a 2-device mesh, and that bad input fails fast.
"""

import json
import math
import os
import subprocess
import sys

import pytest

import helpers

_SCRIPT = os.path.join(helpers.REPO, 'benchmarks', 'step_benchmark.py')
_PHASES = ('encoder', 'stack1', 'stack0', 'joint')


def _run(*flags):
  return subprocess.run(
      [sys.executable, _SCRIPT, '--config=configs/mnist.py:tiny', '--json',
       *flags],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=600,
      check=False)


def test_prints_every_figure_as_a_json_line():
  res = _run('--batch=8', '--devices=2', '--iters=1', '--repeats=1',
             '--num_samples=20', '--sample_batch=10')
  assert res.returncode == 0, res.stderr[-3000:]
  figures = {}
  for line in res.stdout.splitlines():
    d = json.loads(line)  # --json: nothing but JSON lines on stdout
    figures[d['name']] = d
  names = ([f'{p}_steps_per_s' for p in _PHASES]
           + [f'{p}_gflops_per_s' for p in _PHASES]
           + ['compile_s', 'compile_cached_s', 'sample_compile_s',
              'sample_images_per_s', 'input_batches_per_s',
              'peak_gflops_per_s', 'mfu'])
  assert set(names) <= set(figures), sorted(set(names) - set(figures))
  for name in names:
    value = figures[name]['value']
    assert math.isfinite(value) and value > 0, (name, value)
  for p in _PHASES:
    assert figures[f'{p}_gflops_per_s']['gflop_per_step'] > 0
    assert figures[f'{p}_steps_per_s']['devices'] == 2
  assert figures['sample_images_per_s']['sample_batch'] == 10
  assert figures['mfu']['step'] in _PHASES
  assert figures['mfu']['unit'] == 'fraction'
  # The fake CPU devices share the host's cores, so the peak is not
  # multiplied by the 2 devices: MFU is the best step over one peak.
  best = max(figures[f'{p}_gflops_per_s']['value'] for p in _PHASES)
  assert math.isclose(figures['mfu']['value'],
                      best / figures['peak_gflops_per_s']['value'],
                      rel_tol=1e-2, abs_tol=1e-4)


def test_rejects_a_non_positive_sample_batch():
  res = _run('--sample_batch=0')
  assert res.returncode != 0
  assert '--sample_batch must be positive' in res.stderr


@pytest.mark.parametrize('num_samples', [15, -10])
def test_rejects_a_sample_count_that_is_not_a_multiple_of_the_classes(
    num_samples):
  res = _run(f'--num_samples={num_samples}')
  assert res.returncode != 0
  assert '--num_samples must be 0 or a positive multiple' in res.stderr
  assert 'Traceback' not in res.stderr
