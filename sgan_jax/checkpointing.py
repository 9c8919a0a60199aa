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

from sgan_jax import state as state_lib


class Checkpointer:
  """Saves and restores `SGANState`s under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3):
    # epath: a local folder or a bucket (gs://...) alike.
    self.directory = epath.Path(workdir) / 'checkpoints'
    if '://' not in str(workdir):
      self.directory = self.directory.absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
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

  def restore_latest_good(self, abstract_state: state_lib.SGANState
                          ) -> tuple[state_lib.SGANState, dict[str, Any]] | None:
    """Restores the newest checkpoint that reads back, or None if none does.

    A truncated or half-written checkpoint (a preempted copy, a full disk) is
    moved aside to `<step>.corrupt-<time>`, never deleted, and the previous
    one is tried; a one-line warning says so. Moving it aside also keeps a
    later save of the same step from colliding with it.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return self.restore(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax/TensorStore raise many types for unreadable data.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        aside = self.directory / f'{step}.corrupt-{int(time.time())}'
        logging.warning('checkpoint %d in %s is unreadable (%s: %s); moved '
                        'to %s, trying the previous one', step,
                        self.directory, type(e).__name__, first, aside)
        (self.directory / str(step)).rename(aside)
        self._manager.reload()
    return None

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
