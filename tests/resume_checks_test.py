"""Tests for sgan_jax.resume_checks: which config and data changes resume."""

import json

import numpy as np
import pytest

import helpers
from sgan_jax import resume_checks


def _tiny(name='mnist'):
  config = helpers.load_config(name)
  config.data.max_examples = 64
  return config


def test_config_json_without_checkpoints_is_replaced_not_enforced(tmp_path):
  """A run that failed before its first save (found late, or crashed while
  compiling) must not lock its workdir to the failed config."""
  failed, fixed = _tiny(), _tiny()
  failed.stacks[0].z_dim = 7
  resume_checks.check_workdir_config(failed, str(tmp_path),
                                     checkpoint_step=None)
  resume_checks.check_workdir_config(fixed, str(tmp_path),
                                     checkpoint_step=None)
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['stacks'][0]['z_dim'] == fixed.stacks[0].z_dim
  with pytest.raises(resume_checks.ConfigMismatchError, match='stacks'):
    resume_checks.check_workdir_config(failed, str(tmp_path), checkpoint_step=1)


def test_resume_may_not_move_the_steps_already_taken(tmp_path):
  config = _tiny()   # encoder 3, stack1 2, stack0 2, joint 2
  resume_checks.check_workdir_config(config, str(tmp_path))
  longer_encoder, longer_stack0 = _tiny(), _tiny()
  longer_encoder.schedule.encoder_steps = 5
  longer_stack0.schedule.stack_steps = (4, 2)
  # At step 6 (inside stack0) the encoder and stack1 phases are done.
  with pytest.raises(resume_checks.ConfigMismatchError, match='encoder'):
    resume_checks.check_workdir_config(longer_encoder, str(tmp_path), 6)
  # Refused: nothing was written.
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['schedule']['encoder_steps'] == 3
  # The phase in progress may change; so may later ones.
  resume_checks.check_workdir_config(longer_stack0, str(tmp_path), 6)
  shorter = _tiny()
  shorter.schedule.joint_steps = 0
  shorter.schedule.stack_steps = (4, 2)
  with pytest.raises(resume_checks.ConfigMismatchError, match='past the end'):
    resume_checks.check_workdir_config(shorter, str(tmp_path), 10)
  # A config.json from before encoder.random_flip existed resumes with it
  # off, as that run trained, and only then.
  saved = json.loads((tmp_path / 'config.json').read_text())
  del saved['encoder']['random_flip']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  resume_checks.check_workdir_config(_tiny(), str(tmp_path), 6)
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  flipping = _tiny()
  flipping.encoder.random_flip = True
  with pytest.raises(resume_checks.ConfigMismatchError, match='random_flip'):
    resume_checks.check_workdir_config(flipping, str(tmp_path), 6)
  # The rest of `schedule` is the algorithm, not its length.
  for key, value in (('g_steps', 2), ('g_steps_by_d_loss', True),
                     ('reset_optimizers_for_joint', False)):
    other = _tiny()
    other.schedule[key] = value
    with pytest.raises(resume_checks.ConfigMismatchError,
                       match=f'schedule.{key}'):
      resume_checks.check_workdir_config(other, str(tmp_path), 6)


def test_resume_refuses_other_training_data_but_not_another_path(tmp_path):
  """data.manual_dir may move; another source (other pixels, other order)
  would feed the resumed run other batches."""
  config, workdir = _tiny(), str(tmp_path)
  images = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28, 1)
  arrays = {'image': images, 'label': np.arange(4, dtype=np.int32)}
  check = resume_checks.check_workdir_config
  record = resume_checks.data_record
  first = record(arrays, 'tfds')
  check(config, workdir, None, first)
  # The same examples from elsewhere: accepted.
  check(config, workdir, 3, record(dict(arrays), 'jpeg tars'))
  reordered = {k: v[::-1] for k, v in arrays.items()}
  with pytest.raises(resume_checks.ConfigMismatchError, match='other data'):
    check(config, workdir, 3, record(reordered, 'jpeg tars'))
  saved = json.loads((tmp_path / resume_checks.DATA_RECORD).read_text())
  assert saved['train_fingerprint'] == first['train_fingerprint']
  # Without a checkpoint nothing is enforced: the record is replaced.
  check(config, workdir, None, record(reordered, 'jpeg tars'))
  saved = json.loads((tmp_path / resume_checks.DATA_RECORD).read_text())
  assert saved['train_source'] == 'jpeg tars'
