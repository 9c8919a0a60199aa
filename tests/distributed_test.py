"""Multi-process training: 2 processes x 2 CPU devices vs 1 x 4.

`python -m sgan_jax.main --coordinator_address=... --num_processes=2
--process_id=I` is started twice on 127.0.0.1 (jax.distributed; the gradient
all-reduce between the processes goes over gloo, the default CPU collectives
of jax 0.10), each process feeding its half of every global batch. The run is
stopped at the end of the independent phases and resumed with the full
schedule; its final state must equal an uninterrupted single-process run on 4
devices, which sees the same global batches and noise.
"""

import ctypes
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

import helpers
from sgan_jax import runs

# Per invocation (all its processes); a cold XLA cache on 2 busy cores needs
# about 100 s for the first one.
_TIMEOUT_S = 300
_EXAMPLES = 64
_TINY_STEPS = 3 + 2 + 2 + 2   # encoder, stack1, stack0, joint (:tiny)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """Prepared arrays (`<dir>/<split>.npz`) that the pipeline reads w/o TF."""
  path = tmp_path_factory.mktemp('npz')
  r = np.random.default_rng(0)
  for split in ('train', 'test'):
    np.savez(path / f'{split}.npz',
             image=r.integers(0, 256, (_EXAMPLES, 28, 28, 1), np.uint8),
             label=(np.arange(_EXAMPLES) % 10).astype(np.int32))
  return str(path)


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# Looked up here, not in the forked child, where loading a library could
# deadlock on a lock another thread of this process held at fork time.
_PRCTL = (ctypes.CDLL(None, use_errno=True).prctl
          if sys.platform.startswith('linux') else None)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
  """Runs in the child before exec: SIGKILL it if the test process dies.

  `_Processes.__exit__` covers failures and interrupts; this covers a test
  process that is itself killed (pytest-xdist, a CI timeout).
  """
  if _PRCTL is not None:
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _env(devices: int) -> dict[str, str]:
  # conftest gives this process 8 devices; each child gets its own count.
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  flags.append(f'--xla_force_host_platform_device_count={devices}')
  return dict(os.environ, XLA_FLAGS=' '.join(flags), JAX_PLATFORMS='cpu',
              TF_CPP_MIN_LOG_LEVEL='2')


class _Processes:
  """`sgan_jax.main` invocations running side by side.

  As a context manager it kills every process it started that is still
  running on exit, so a failing test leaves no process behind.
  """

  def __init__(self, data_dir: str, log_dir: pathlib.Path):
    self._data_dir = data_dir
    self._log_dir = log_dir
    self._started: list[tuple[subprocess.Popen, pathlib.Path]] = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    for proc, _ in self._started:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    return False

  def start(self, name: str, workdir: str, *, processes: int, devices: int,
            extra: tuple[str, ...] = ()) -> list[pathlib.Path]:
    """Starts one run in `processes` processes; returns their log files."""
    args = [sys.executable, '-m', 'sgan_jax.main',
            '--config=configs/mnist.py:tiny', '--config.model.conv_impl=xla',
            f'--config.data.manual_dir={self._data_dir}',
            f'--workdir={workdir}', *extra]
    if processes > 1:
      args += [f'--coordinator_address=127.0.0.1:{_free_port()}',
               f'--num_processes={processes}']
    logs = []
    for i in range(processes):
      log = self._log_dir / f'{name}.{i}.log'
      with open(log, 'w') as f:
        proc = subprocess.Popen(
            args + ([f'--process_id={i}'] if processes > 1 else []),
            cwd=helpers.REPO, env=_env(devices), stdout=f,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
      self._started.append((proc, log))
      logs.append(log)
    return logs

  def signal(self, index: int, signum: int) -> None:
    """Sends `signum` to the `index`-th process started."""
    self._started[index][0].send_signal(signum)

  def wait(self) -> None:
    """Waits for every process; fails at the first non-zero exit.

    A process that failed leaves its peers waiting in a collective (gloo
    gives up only after 30 s or more), so nothing waits for them.
    """
    deadline = time.monotonic() + _TIMEOUT_S
    while True:
      codes = [proc.poll() for proc, _ in self._started]
      if all(c == 0 for c in codes):
        return
      if any(c not in (None, 0) for c in codes):
        what = f'exit codes {codes} (None: still running, killed)'
      elif time.monotonic() > deadline:
        what = f'timed out after {_TIMEOUT_S} s'
      else:
        time.sleep(0.2)
        continue
      tails = '\n'.join(f'--- {log.name} ends:\n{log.read_text()[-2000:]}'
                        for _, log in self._started)
      pytest.fail(f'{what}\n{tails}')


def test_two_processes_resumed_equal_one_process(tmp_path, data_dir):
  multi, single = str(tmp_path / 'multi'), str(tmp_path / 'single')
  with _Processes(data_dir, tmp_path) as procs:
    # Stopped after the independent phases, then resumed with the full
    # schedule (schedule.* may change on resume). The 1-process reference
    # runs beside the first part: on 2 cores the runs are compile-bound and
    # the processes of the 2-process run often wait for each other.
    first = procs.start('multi_first', multi, processes=2, devices=2,
                        extra=('--config.schedule.joint_steps=0',))
    procs.start('single', single, processes=1, devices=4)
    procs.wait()
    second = procs.start('multi_resumed', multi, processes=2, devices=2)
    procs.wait()
  first = [log.read_text() for log in first]
  second = [log.read_text() for log in second]

  for i, log in enumerate(first):
    assert f'4 device(s), process {i} of 2' in log
    assert 'encoder test accuracy' in log
  for log in second:
    assert 'resuming from' in log and 'step 7 (phase stack0)' in log
    assert f'step {_TINY_STEPS}/{_TINY_STEPS} [joint' in log
  # Process 0 alone writes images; every grid step is there.
  assert sorted(os.listdir(os.path.join(multi, 'samples'))) == [
      f'step_{s:08d}.png' for s in (4, 5, 7, 8, 9)]

  # Restored here onto this process's 8-device mesh: checkpoints written by
  # 2 processes read back anywhere.
  _, st_multi, _, _ = runs.restore_latest(multi)
  _, st_single, _, _ = runs.restore_latest(single)
  assert int(st_multi.step) == int(st_single.step) == _TINY_STEPS
  # By path: the optimizers (static fields) are different objects.
  leaves_multi, leaves_single = (
      helpers.leaves_by_path(st_multi), helpers.leaves_by_path(st_single))
  assert leaves_multi.keys() == leaves_single.keys()
  # Not bit-exact: the gradient all-reduce runs over gloo in 2 processes
  # and in-process on 1, summing in another order (measured max |diff| 6e-8
  # after 9 steps, on 175 of 210 leaves).
  chex.assert_trees_all_close(leaves_multi, leaves_single, atol=1e-6,
                              rtol=1e-5)


def test_sigterm_to_one_process_stops_both_after_the_same_step(
    tmp_path, data_dir):
  """A preemption notice reaches one host first; every process must still
  save the same step and exit, or the others hang in a collective."""
  workdir = tmp_path / 'w'
  with _Processes(data_dir, tmp_path) as procs:
    logs = procs.start('preempted', str(workdir), processes=2, devices=2,
                       extra=('--config.schedule.joint_steps=100000',))
    deadline = time.monotonic() + _TIMEOUT_S
    ckpt_dir = workdir / 'checkpoints'
    while not (ckpt_dir.exists()
               and any(n.isdigit() for n in os.listdir(ckpt_dir))):
      if time.monotonic() > deadline:
        pytest.fail('no checkpoint appeared:\n' + logs[1].read_text()[-2000:])
      time.sleep(0.2)
    procs.signal(1, signal.SIGTERM)
    procs.wait()
  saved = []
  for log in logs:
    text = log.read_text()
    assert 'SIGTERM received: saved step ' in text, text[-2000:]
    saved.append(int(text.split('SIGTERM received: saved step ')[1]
                     .split(',')[0]))
  assert saved[0] == saved[1] >= 3
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()]
  assert max(steps) == saved[0]

