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
  if sc.g_steps < 1:
    raise ValueError(f'config.schedule.g_steps (G updates per D update) '
                     f'must be >= 1, got {sc.g_steps}')
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


def check_resumable(old: tuple[Phase, ...], new: tuple[Phase, ...],
                    step: int) -> None:
  """Raises ValueError unless `new` puts steps [0, step) where `old` did.

  A resumed run may lengthen or shorten the phase it stopped in and change
  any later one. The steps already taken must keep their phase and place
  in it: the phase picks the compiled step and the optimizer reset, and a
  changed earlier phase would send training back into it (the encoder's
  learning-rate schedule, too, spans its phase).

  Args:
    old: the phases of the run that wrote the checkpoint.
    new: the phases of the resuming config.
    step: the checkpoint's global step.
  """
  def taken(phases):
    return [(p.name, p.start, min(p.end, step)) for p in phases
            if p.start < step]

  def fmt(spans):
    return ', '.join(f'{n} [{a}, {b})' for n, a, b in spans)

  if step > total_steps(new):
    raise ValueError(f'the checkpoint is at step {step}, past the end of '
                     f'this schedule ({total_steps(new)} steps)')
  ran, moved = taken(old), taken(new)
  if ran != moved:
    raise ValueError(
        f'the checkpoint at step {step} ran {fmt(ran)}; this schedule puts '
        f'those steps in {fmt(moved)}: change only the length of the phase '
        'in progress or of later ones, or use a new --workdir')
