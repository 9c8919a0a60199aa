"""Checkpointer: which checkpoint a run restores when some do not read back."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgan_jax import checkpointing


def _state(value: float):
  return {'w': jnp.full((64, 64), value, jnp.float32),
          'step': jnp.asarray(int(value), jnp.int32)}


def _abstract():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return checkpointing.abstract_like(jax.eval_shape(lambda: _state(0.0)),
                                     sharding)


def _truncate(step_dir: str) -> None:
  """Cuts every data file of a checkpoint to a third (a half-written copy)."""
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'),
                                recursive=True)
           if os.path.isfile(f) and os.path.getsize(f) > 0]
  assert files
  for f in files:
    with open(f, 'r+b') as fh:
      fh.truncate(max(1, os.path.getsize(f) // 3))


@pytest.fixture
def two_checkpoints(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  for step in (1, 2):
    ckpt.save(step, _state(float(step)), {'step': step})
  ckpt.close()
  return str(tmp_path), os.path.join(str(tmp_path), 'checkpoints')


def _restore(workdir: str, **kw):
  ckpt = checkpointing.Checkpointer(workdir, keep=3)
  try:
    return ckpt.restore_latest_good(_abstract(), **kw)
  finally:
    ckpt.close()


def test_no_checkpoint_restores_none(tmp_path):
  assert _restore(str(tmp_path)) is None


def test_unreadable_latest_is_moved_aside_and_the_previous_restored(
    two_checkpoints):
  workdir, ckpt_dir = two_checkpoints
  _truncate(os.path.join(ckpt_dir, '2'))
  st, meta = _restore(workdir)
  assert meta['step'] == 1
  np.testing.assert_array_equal(st['w'], np.full((64, 64), 1.0))
  names = os.listdir(ckpt_dir)
  assert '2' not in names and any(n.startswith('2.corrupt-') for n in names)


def test_a_reader_falls_back_without_moving_anything(two_checkpoints):
  workdir, ckpt_dir = two_checkpoints
  _truncate(os.path.join(ckpt_dir, '2'))
  before = sorted(os.listdir(ckpt_dir))
  _, meta = _restore(workdir, move_aside=False)
  assert meta['step'] == 1
  assert sorted(os.listdir(ckpt_dir)) == before


def test_none_readable_raises_and_moves_nothing(two_checkpoints):
  workdir, ckpt_dir = two_checkpoints
  for step in ('1', '2'):
    _truncate(os.path.join(ckpt_dir, step))
  before = sorted(os.listdir(ckpt_dir))
  with pytest.raises(checkpointing.RestoreError,
                     match='none of the 2 checkpoint'):
    _restore(workdir)
  assert sorted(os.listdir(ckpt_dir)) == before
