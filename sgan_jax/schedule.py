"""The phase schedule: encoder -> each stack independently -> joint.

Phases are consecutive ranges of the global step, so the phase (and which
compiled step to run) is a pure function of the step: a resumed run picks up
in the right phase without storing it.
"""

import dataclasses

import ml_collections


@dataclasses.dataclass(frozen=True)
class Phase:
  """Steps [start, end) of one phase.

  Attributes:
    name: 'encoder', 'stack{i}' or 'joint'.
    stack: the stack index for 'stack{i}' phases, else None.
    start: first global step of the phase.
    end: one past its last step.
  """
  name: str
  stack: int | None
  start: int
  end: int

  @property
  def length(self) -> int:
    return self.end - self.start


def build(config: ml_collections.ConfigDict) -> tuple[Phase, ...]:
  """Phases with at least one step, in training order.

  Stacks train top-down (the label-level stack first), so the sample grids
  written while stack 0 trains already use a trained G_{N-1}. The stacks are
  independent in that phase (each is conditioned on real features), so the
  order changes nothing else.
  """
  sc = config.schedule
  num_stacks = len(config.stacks)
  stack_steps = tuple(sc.stack_steps)
  if len(stack_steps) != num_stacks:
    raise ValueError(f'config.schedule.stack_steps has {len(stack_steps)} '
                     f'entries for {num_stacks} stacks')
  lengths = [('encoder', None, sc.encoder_steps)]
  lengths += [(f'stack{i}', i, stack_steps[i])
              for i in reversed(range(num_stacks))]
  lengths.append(('joint', None, sc.joint_steps))
  phases, start = [], 0
  for name, stack, n in lengths:
    if n < 0:
      raise ValueError(f'negative step count {n} for phase {name!r}')
    if n:
      phases.append(Phase(name, stack, start, start + n))
      start += n
  if not phases or phases[0].name != 'encoder':
    raise ValueError('config.schedule.encoder_steps must be positive: the '
                     'stacks need a trained encoder')
  return tuple(phases)


def total_steps(phases: tuple[Phase, ...]) -> int:
  return phases[-1].end


def phase_at(phases: tuple[Phase, ...], step: int) -> Phase:
  """The phase that global step `step` belongs to."""
  for p in phases:
    if p.start <= step < p.end:
      return p
  raise ValueError(f'step {step} is past the schedule '
                   f'({total_steps(phases)} steps)')
