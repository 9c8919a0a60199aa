"""Phase boundaries derived from the config."""

import pytest

import helpers
from sgan_jax import schedule


def test_phases_are_consecutive_and_top_down():
  config = helpers.load_config('mnist')
  config.schedule.encoder_steps = 5
  config.schedule.stack_steps = (7, 3)
  config.schedule.joint_steps = 4
  phases = schedule.build(config)
  assert [(p.name, p.start, p.end) for p in phases] == [
      ('encoder', 0, 5), ('stack1', 5, 8), ('stack0', 8, 15),
      ('joint', 15, 19)]
  assert schedule.total_steps(phases) == 19
  assert schedule.phase_at(phases, 7).name == 'stack1'
  assert schedule.phase_at(phases, 15).name == 'joint'
  with pytest.raises(ValueError, match='past the schedule'):
    schedule.phase_at(phases, 19)


def test_zero_length_phases_are_skipped_and_errors_are_clear():
  config = helpers.load_config('mnist')
  config.schedule.joint_steps = 0
  assert [p.name for p in schedule.build(config)][-1] == 'stack0'
  config.schedule.stack_steps = (1,)
  with pytest.raises(ValueError, match='stack_steps'):
    schedule.build(config)
  config.schedule.stack_steps = (1, 1)
  config.schedule.encoder_steps = 0
  with pytest.raises(ValueError, match='encoder_steps'):
    schedule.build(config)
  config.schedule.encoder_steps = 1
  config.schedule.g_steps = 0
  with pytest.raises(ValueError, match='g_steps'):
    schedule.build(config)
