"""Faults: preemption, SIGKILL, unreadable checkpoints, NaNs, bad input."""

import glob
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import helpers
from sgan_jax import runs
from sgan_jax import train


def _tiny():
  config = helpers.load_config('mnist')
  config.data.max_examples = 64
  return config


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(tmp_path):
  config = _tiny()
  workdir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=64):
    train.train_and_evaluate(config, workdir, stop_after=4)
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    assert {'3', '4'} <= set(os.listdir(ckpt_dir))
    # Truncate every data file of the latest checkpoint (a half-written copy).
    for f in glob.glob(os.path.join(ckpt_dir, '4', 'state', '**', '*'),
                       recursive=True):
      if os.path.isfile(f) and os.path.getsize(f) > 0:
        with open(f, 'r+b') as fh:
          fh.truncate(max(1, os.path.getsize(f) // 3))
    resumed = train.train_and_evaluate(config, workdir)
    reference = train.train_and_evaluate(config, str(tmp_path / 'ref'))
  names = os.listdir(ckpt_dir)
  assert any(n.startswith('4.corrupt-') for n in names)  # kept, not deleted
  assert int(resumed.step) == 9
  # Resumed from step 3, it still ends where an uninterrupted run does.
  assert helpers.tree_equal(jax.device_get(resumed),
                            jax.device_get(reference))


def _nan_in_stack1():
  config = _tiny()
  config.stacks[1].g_lr = float('nan')
  # Only the phases up to the poisoned one: fewer steps to compile.
  config.schedule.stack_steps = (0, 2)
  config.schedule.joint_steps = 0
  return config


def test_nonfinite_loss_stops_with_the_stack_and_term(tmp_path):
  config = _nan_in_stack1()
  with tfds.testing.mock_data(num_examples=64):
    with pytest.raises(FloatingPointError, match='stack1/') as e:
      train.train_and_evaluate(config, str(tmp_path))
  assert 'the last checkpoint is untouched' in str(e.value)
  # The encoder phase's checkpoint (step 3) is the newest one.
  assert max(int(n) for n in os.listdir(tmp_path / 'checkpoints')
             if n.isdigit()) == 3


def test_a_nonfinite_state_is_never_saved(tmp_path):
  # Step 4 saves (ckpt_every=1) but does not log: its losses, computed
  # before the NaN update, are finite; only the state check sees the NaNs.
  config = _nan_in_stack1()
  config.log.log_every = 1000
  config.log.ckpt_every = 1
  with tfds.testing.mock_data(num_examples=64):
    with pytest.raises(FloatingPointError,
                       match='non-finite parameters .* after step 4'):
      train.train_and_evaluate(config, str(tmp_path))
  assert max(int(n) for n in os.listdir(tmp_path / 'checkpoints')
             if n.isdigit()) == 3


def test_nonfinite_updates_can_be_skipped(tmp_path):
  config = _nan_in_stack1()
  config.optim.skip_nonfinite_updates = True
  with tfds.testing.mock_data(num_examples=64):
    st = train.train_and_evaluate(config, str(tmp_path))
  assert int(st.step) == 5
  leaves = jax.tree.leaves(jax.device_get(st.stacks[1].g.params))
  assert all(np.all(np.isfinite(x)) for x in leaves)


def _main_cmd(workdir, *extra):
  return [sys.executable, '-m', 'sgan_jax.main',
          '--config=configs/mnist.py:tiny', f'--workdir={workdir}',
          '--config.model.conv_impl=xla',
          f'--config.data.manual_dir={helpers.MNIST_DIR}', *extra]


def _env(tmp_path):
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')


def _wait_for_checkpoint(proc, ckpt_dir, timeout=400):
  t = time.time()
  while time.time() - t < timeout:
    if os.path.isdir(ckpt_dir) and any(n.isdigit()
                                       for n in os.listdir(ckpt_dir)):
      return
    if proc.poll() is not None:
      raise AssertionError(f'exited early: {proc.stderr.read()[-2000:]}')
    time.sleep(0.2)
  raise AssertionError('no checkpoint appeared')


def test_sigkill_then_restart_equals_an_uninterrupted_run(tmp_path,
                                                         mnist_tfds_dir):
  data = ['--config.data.data_dir=' + mnist_tfds_dir,
          '--config.log.ckpt_every=1']
  ref = subprocess.run(_main_cmd(tmp_path / 'ref', *data), cwd=helpers.REPO,
                       env=_env(tmp_path), capture_output=True, text=True,
                       timeout=900, check=False)
  assert ref.returncode == 0, ref.stderr[-3000:]
  workdir = tmp_path / 'killed'
  proc = subprocess.Popen(_main_cmd(workdir, *data), cwd=helpers.REPO,
                          env=_env(tmp_path), stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True)
  _wait_for_checkpoint(proc, workdir / 'checkpoints')
  proc.kill()
  proc.wait()
  again = subprocess.run(_main_cmd(workdir, *data), cwd=helpers.REPO,
                         env=_env(tmp_path), capture_output=True, text=True,
                         timeout=900, check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'resuming from' in again.stderr
  # Every leaf of the final state, bit for bit: params, optimizer moments,
  # EMA, step and key (stronger than comparing samples, and no subprocess).
  _, st_ref, _, _ = runs.restore_latest(str(tmp_path / 'ref'))
  _, st_again, _, _ = runs.restore_latest(str(workdir))
  leaves_ref = helpers.leaves_by_path(st_ref)
  leaves_again = helpers.leaves_by_path(st_again)
  assert leaves_ref.keys() == leaves_again.keys()
  for path, leaf in leaves_ref.items():
    np.testing.assert_array_equal(leaf, leaves_again[path], err_msg=path)


def test_sigterm_saves_at_the_next_step_and_exits_zero(tmp_path,
                                                       mnist_tfds_dir):
  workdir = tmp_path / 'w'
  # Long enough that SIGTERM arrives mid-run.
  proc = subprocess.Popen(
      _main_cmd(workdir, '--config.data.data_dir=' + mnist_tfds_dir,
                '--config.schedule.joint_steps=100000'),
      cwd=helpers.REPO, env=_env(tmp_path), stderr=subprocess.PIPE,
      stdout=subprocess.DEVNULL, text=True)
  _wait_for_checkpoint(proc, workdir / 'checkpoints')
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert 'SIGTERM received: saved step' in err
  saved = int(err.split('SIGTERM received: saved step ')[1].split(',')[0])
  steps = [int(n) for n in os.listdir(workdir / 'checkpoints') if n.isdigit()]
  assert max(steps) == saved and saved >= 3


@pytest.mark.parametrize('override,message', [
    ('--config.log.log_everyy=1',
     'unknown config key \'log_everyy\' Did you mean "log_every"'),
    ('--coordinator_address=localhost:1', '--num_processes'),
    ('--config.data.name=imagenet', 'imagenet'),
    ('--config.stacks[0].z_dim=0', 'z_dim must be positive'),
    ('--config.data.batch_size=12', 'divisible by the 8 devices'),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, override, message):
  env = dict(_env(tmp_path),
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  res = subprocess.run(_main_cmd(tmp_path / 'w', override), cwd=helpers.REPO,
                       env=env, capture_output=True, text=True, timeout=300,
                       check=False)
  assert res.returncode != 0
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith('error:') and message in last, res.stderr[-2000:]
  assert 'Traceback' not in res.stderr
  # Nothing was written for a run that never started.
  assert not os.path.exists(tmp_path / 'w')
