"""Orbax checkpoints of the whole SGANState plus a small JSON record.

The record ('meta') says which phase the step belongs to, for people and
tools reading the directory; training itself derives the phase from the step.
"""

import time
from typing import Any

from absl import logging

from etils import epath
import jax
import orbax.checkpoint as ocp

from sgan_jax import sharding
from sgan_jax import state as state_lib


class RestoreError(RuntimeError):
  """A run's checkpoints exist but none of them can be restored."""


class Checkpointer:
  """Saves and restores `SGANState`s under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3):
    # epath: a local folder or a bucket (gs://...) alike.
    self.directory = epath.Path(workdir) / 'checkpoints'
    if '://' not in str(workdir):
      self.directory = self.directory.absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        # Not created here: the first save makes it, so a run refused by its
        # checks and the read-only CLIs (sample, evaluate) leave no folder.
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=False),
        item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, st: state_lib.SGANState,
           meta: dict[str, Any]) -> None:
    """Starts an asynchronous save; device buffers are copied before this
    returns, so the caller may donate `st` to the next step right away."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(st), meta=ocp.args.JsonSave(meta)),
                       force=True)

  def restore(self, abstract_state: state_lib.SGANState,
              step: int | None = None
              ) -> tuple[state_lib.SGANState, dict[str, Any]]:
    """Restores `step` (default latest) into the structure and shardings of
    `abstract_state` (jax.ShapeDtypeStruct leaves with shardings)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def restore_latest_good(
      self, abstract_state: state_lib.SGANState, move_aside: bool = True
  ) -> tuple[state_lib.SGANState, dict[str, Any]] | None:
    """Restores the newest checkpoint that reads back.

    A truncated or half-written checkpoint (a preempted copy, a full disk) is
    skipped for the previous one, with a one-line warning. Once an older one
    restores, the newer unreadable ones are moved aside to
    `<step>.corrupt-<time>` (never deleted), so that the resumed run's saves
    of those steps do not collide with them.

    Args:
      abstract_state: structure and shardings to restore into.
      move_aside: False for readers of a run (sample, evaluate), which must
        never rename the checkpoints of a run that may still be training.

    Returns:
      (state, meta), or None when the directory holds no checkpoint.

    Raises:
      RestoreError: when none of the checkpoints restores. Nothing is moved
        then: an error that hits every checkpoint alike (out of memory, an
        unreachable bucket, a changed SGANState) is not corruption, and a run
        must not quietly start over beside its own checkpoints.
    """
    failed = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        restored = self.restore(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax/TensorStore raise many types for unreadable data.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        logging.warning('checkpoint %d in %s is unreadable (%s: %s); trying '
                        'the previous one', step, self.directory,
                        type(e).__name__, first)
        failed.append((step, f'{type(e).__name__}: {first}'))
        continue
      if failed and move_aside:
        self._move_aside([s for s, _ in failed])
      return restored
    if failed:
      step, why = failed[0]
      raise RestoreError(
          f'none of the {len(failed)} checkpoint(s) in {self.directory} '
          f'restores (step {step}: {why}); nothing was moved or overwritten')
    return None

  def _move_aside(self, steps: list[int]) -> None:
    if jax.process_index() == 0:
      for step in steps:
        aside = self.directory / f'{step}.corrupt-{int(time.time())}'
        logging.warning('moved unreadable checkpoint %d to %s', step, aside)
        (self.directory / str(step)).rename(aside)
    # The other processes must not list the directory before the renames.
    sharding.wait_for_all_processes(
        f'sgan_jax moved aside {",".join(map(str, steps))}')
    self._manager.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (e.g. from jax.eval_shape) on `sharding`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)
