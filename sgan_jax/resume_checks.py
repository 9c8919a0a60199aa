"""Whether a workdir's run may be resumed with this config and this data.

A workdir records its run's config (`config.json`) and training data
(`data.json`: a fingerprint of the examples in their order). Resuming with
anything that would change the results (another architecture, another G
steps rule, other examples) is refused before the workdir is touched; only
where the data lives, the phase lengths not yet reached and the logging may
change.
"""

import json
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np

from sgan_jax import atomic_file
from sgan_jax import config_base
from sgan_jax import datasets
from sgan_jax import schedule as schedule_lib

# Keys that may change between a run and its resumption: where data comes
# from, how long each phase trains (within `check_resumable`) and how often
# to log, sample and evaluate. Anything else changing (the G steps per D
# step, say) means the checkpoint belongs to a different experiment.
_RESUMABLE_CHANGES = ('data.data_dir', 'data.manual_dir',
                      'schedule.encoder_steps', 'schedule.stack_steps',
                      'schedule.joint_steps', 'log.',
                      'optim.skip_nonfinite_updates')


# Beside config.json: which training examples the run uses (`data_record`).
DATA_RECORD = 'data.json'


class ConfigMismatchError(ValueError):
  """The workdir holds a run made with an incompatible config."""


def check_workdir_config(config: ml_collections.ConfigDict, workdir: str,
                         checkpoint_step: int | None = None,
                         data: dict[str, Any] | None = None) -> None:
  """Checks workdir/config.json against a resumed run's, then writes it.

  Args:
    config: this run's config.
    workdir: the run's directory.
    checkpoint_step: the step of the workdir's newest checkpoint; None when
      it holds none. Without one, an existing config.json belongs to a run
      that stopped before its first save (a crash while compiling, say): it
      is replaced, so that the corrected command is not refused.
    data: this run's training data (`data_record`), checked against and
      written to workdir/data.json. `data.data_dir` and `data.manual_dir` may
      change on resume, but the examples and their order may not: another
      source (CIFAR-10's JPEG tars instead of tfds, say) would feed the
      resumed run other batches. A workdir from before data.json existed
      adopts this run's record.

  Raises:
    ConfigMismatchError: the config differs in more than `_RESUMABLE_CHANGES`,
      its schedule moves steps the checkpoint has already taken, or the
      training data differ from the checkpointed run's.
  """
  path = epath.Path(workdir) / 'config.json'
  data_path = epath.Path(workdir) / DATA_RECORD
  new = json.loads(config.to_json_best_effort())
  if checkpoint_step is not None and data is not None and data_path.exists():
    old_data = json.loads(data_path.read_text())
    if old_data.get('train_fingerprint') != data['train_fingerprint']:
      raise ConfigMismatchError(
          f'{workdir} holds a run trained on other data: its '
          f'{old_data.get("train_examples")} training examples from '
          f'{old_data.get("train_source")} differ from these '
          f'{data["train_examples"]} from {data["train_source"]} (contents '
          f'or order); resume with the same data source or use a new '
          f'--workdir')
  if checkpoint_step is not None and path.exists():
    old = config_base.with_added_keys(json.loads(path.read_text()))
    diffs = [k for k in _flat_diff(old, new)
             if not any(k == p or k.startswith(p) for p in _RESUMABLE_CHANGES)]
    if diffs:
      raise ConfigMismatchError(
          f'{workdir} holds a run with a different config ({", ".join(diffs)}'
          f' differ); use a new --workdir or the same config')
    old_phases = schedule_lib.build(ml_collections.ConfigDict(
        {k: old[k] for k in ('schedule', 'stacks')}))
    try:
      schedule_lib.check_resumable(old_phases, schedule_lib.build(config),
                                   checkpoint_step)
    except ValueError as e:
      raise ConfigMismatchError(f'{workdir}: {e}') from None
  if jax.process_index() == 0:
    # Atomic: the other processes of a multi-process run read these files
    # at the same time.
    if data is not None:
      atomic_file.write_json(data_path, data)
    atomic_file.write_json(path, new)


def data_record(arrays: dict[str, np.ndarray], source: str
                ) -> dict[str, Any]:
  """The training split as workdir/data.json records it.

  Args:
    arrays: the loaded train split.
    source: where it came from (`DatasetInfo.source`), for error messages.

  Returns:
    A JSON-able dict; resuming requires the same `train_fingerprint`.
  """
  return {'train_fingerprint': datasets.fingerprint(arrays),
          'train_examples': len(arrays['label']), 'train_source': source}


def _flat_diff(a: Any, b: Any, prefix: str = '') -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _flat_diff(a.get(k), b.get(k), f'{prefix}{k}.')
    return out
  return [] if a == b else [prefix.rstrip('.')]
