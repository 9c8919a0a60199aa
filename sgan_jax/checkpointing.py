"""Orbax checkpoints of the whole SGANState plus a small JSON record.

The record ('meta') says which phase the step belongs to, for people and
tools reading the directory; training itself derives the phase from the step.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from sgan_jax import state as state_lib


class Checkpointer:
  """Saves and restores `SGANState`s under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
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
