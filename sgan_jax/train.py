"""The training loop: encoder -> stacks independently -> joint.

`train_and_evaluate(config, workdir)` is the single entry point (main.py and
the tests call it). It builds the mesh, data, networks and compiled steps,
restores the latest checkpoint of `workdir` if there is one, and runs the
remaining steps of the schedule. Host work per step is one batch transfer and
one dispatch; metrics reach the host only at log steps.
"""

import functools
import os
import signal
import threading
import time
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from sgan_jax import architectures
from sgan_jax import batching
from sgan_jax import checkpointing
from sgan_jax import datasets
from sgan_jax import evaluation
from sgan_jax import input_pipeline
from sgan_jax import jitted
from sgan_jax import judge
from sgan_jax import resume_checks
from sgan_jax import rng
from sgan_jax import sampling
from sgan_jax import schedule as schedule_lib
from sgan_jax import sharding
from sgan_jax import state as state_lib
from sgan_jax import steps
from sgan_jax import tensorflow_cpu


def check_log_config(log: ml_collections.ConfigDict,
                     num_classes: int) -> None:
  """One-line ValueErrors for `log.*` values the loop cannot run with."""
  for name in ('log_every', 'sample_every', 'ckpt_every', 'keep'):
    if log[name] < 1:
      raise ValueError(f'config.log.{name} must be >= 1, got {log[name]}')
  for name in ('eval_every', 'judge_steps', 'bn_calibration_num'):
    if log.get(name, 0) < 0:
      raise ValueError(f'config.log.{name} must be >= 0, got {log[name]}')
  if log.eval_every > 0 and (log.eval_num < 1 or log.eval_num % num_classes):
    raise ValueError(f'config.log.eval_num must be a positive multiple of '
                     f'the {num_classes} classes, got {log.eval_num}')


def setup(config: ml_collections.ConfigDict, workdir: str):
  """Everything a run needs before its first step.

  Every check of the config and data happens here, before the workdir is
  written to, so bad input never leaves a half-made run behind.

  Returns:
    (models, mesh, compiled steps, checkpointer, state, train arrays,
    batch sampler, test arrays or None once the encoder phase is over).
  """
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.data.batch_size, mesh)
  architectures.check_config(config)
  num_classes, _ = datasets.dataset_info(config.data.name)
  check_log_config(config.log, num_classes)
  arrays, info = input_pipeline.load_split(config.data, 'train')
  logging.info('data: %s train split, %d examples %s from %s', info.name,
               info.num_examples, info.image_shape, info.source)
  models = architectures.build_models(config, info.num_classes,
                                      info.image_shape)
  # Checks the batch size and seed against the data.
  sampler = batching.BatchSampler(
      arrays, config.data.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  ckpt = checkpointing.Checkpointer(workdir, keep=config.log.keep)
  try:
    latest = ckpt.latest_step()
    test_arrays = None
    if latest is None or latest < schedule_lib.build(config)[0].end:
      # E's test accuracy at the end of its phase needs the test split: a
      # missing one is found now, not after the encoder's steps.
      test_arrays, _ = input_pipeline.load_split(config.data, 'test')
    # The newest step, readable or not: a schedule that keeps the steps up to
    # it in place keeps those of any older checkpoint too.
    resume_checks.check_workdir_config(
        config, workdir, latest,
        resume_checks.data_record(arrays, info.source))
    compiled = jitted.compile_steps(models, config, mesh)
    repl = sharding.replicated(mesh)
    root = jax.random.key(config.seed)
    init = jax.jit(functools.partial(state_lib.create_state, models, config),
                   out_shardings=repl)
    offset = steps.pixel_offset(config.data.image_range, arrays['image'])
    restored = None
    if ckpt.all_steps():
      abstract = checkpointing.abstract_like(
          jax.eval_shape(init, root, offset), repl)
      restored = ckpt.restore_latest_good(abstract)
    if restored is not None:
      st, meta = restored
      logging.info('resuming from %s step %d (phase %s)', ckpt.directory,
                   int(st.step), meta.get('phase'))
    else:
      st = init(root, offset)
  except BaseException:
    ckpt.close()  # Its manager's threads must not outlive a refused run.
    raise
  return models, mesh, compiled, ckpt, st, arrays, sampler, test_arrays


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None) -> state_lib.SGANState:
  """Runs (or resumes) the whole schedule in `workdir`.

  SIGTERM (what TPU/GCE preemption sends) or SIGINT makes the loop save a
  checkpoint after the step in flight and return; a later call resumes.

  Args:
    config: a locked run config (configs/*.py).
    workdir: output directory (checkpoints/, samples/, TensorBoard events,
      config.json).
    stop_after: if set, checkpoint and return once the global step reaches
      this value (a later call resumes from there).

  Returns:
    The final state (or the state at the stop).
  """
  phases = schedule_lib.build(config)
  (models, mesh, compiled, ckpt, st, arrays, sampler,
   test_arrays) = setup(config, workdir)
  try:
    with _StopRequest() as stop:
      st = _run(config, workdir, phases, models, mesh, compiled, ckpt, st,
                arrays, sampler, test_arrays, stop_after, stop)
  finally:
    # Lets an asynchronous save in flight finish, also when a step raised.
    ckpt.close()
  return st


def _run(config, workdir, phases, models, mesh, compiled, ckpt, st, arrays,
         sampler, test_arrays, stop_after, stop):
  """The step loop of `train_and_evaluate`."""
  total = schedule_lib.total_steps(phases)
  root = jax.random.key(config.seed)
  writer = _make_writer(workdir)
  logging.info('devices: %d x %s, %d process(es); global batch %d, %d per '
               'device', mesh.devices.size, jax.devices()[0].platform,
               jax.process_count(), config.data.batch_size,
               config.data.batch_size // mesh.devices.size)
  logging.info('schedule: %s', ', '.join(f'{p.name} {p.length}' for p in
                                         phases))
  start = int(st.step)
  progress = _Progress(total, start)
  grids = _GridWriter(models, config, compiled['sample'], mesh, root, workdir,
                      writer)
  lc = config.log
  evaluator = None
  if lc.eval_every > 0 and jax.process_count() == 1:
    judge_fn = None
    if lc.judge_steps > 0:
      # Trained on its first use (the first evaluation), cached in eval/.
      judge_fn = judge.Judge(config, mesh, arrays,
                             cache_dir=os.path.join(workdir,
                                                    evaluation.EVAL_DIR))
    evaluator = evaluation.make_evaluator(
        models, config, mesh, num=lc.eval_num, train_arrays=arrays,
        test_arrays=test_arrays,  # None once E is trained: loaded there.
        sample_fn=compiled['sample'], judge_fn=judge_fn)
  end = total if stop_after is None else min(total, max(stop_after, start))
  step_fns = _compile_phase_steps(config, phases, start, end, compiled, mesh,
                                  st, arrays, root)
  batches = batching.iterate_batches(sampler, start, end - start)
  for step, local_batch in batches:
    phase = schedule_lib.phase_at(phases, step)
    if (step == phase.start and phase.name == 'joint'
        and config.schedule.reset_optimizers_for_joint):
      st = compiled['reset_optimizers'](st)
    batch = sharding.shard_batch(local_batch, mesh)
    st, metrics = step_fns[phase.name](st, batch, root)
    done = step + 1
    last_of_phase = done == phase.end
    if done % lc.log_every == 0 or last_of_phase:
      _log_metrics(writer, done, phase, jax.device_get(metrics), progress)
    if phase.name == 'encoder' and last_of_phase:
      acc = evaluate_encoder(config, compiled['encoder_eval'], st, mesh,
                             test_arrays)
      writer.write_scalars(done, {'encoder/test_acc': acc})
      logging.info('encoder test accuracy: %.4f', acc)
    if phase.name != 'encoder' and (done % lc.sample_every == 0
                                    or last_of_phase):
      grids.write(done, st)
    if evaluator is not None and phase.name != 'encoder' and (
        done % lc.eval_every == 0 or done == total):
      _log_evaluation(writer, done, evaluator(st, rng.eval_key(root)))
    # Read once: a signal between two reads would stop without a save.
    requested = stop.poll(done)
    if (done % lc.ckpt_every == 0 or last_of_phase or requested
        or done == end):
      # The logged losses predate the step's update, and a save need not be
      # a log step: the state itself is checked.
      if not bool(compiled['state_is_finite'](st)):
        raise FloatingPointError(
            f'non-finite parameters or optimizer state after step {done} '
            f'(phase {phase.name}); not saved, the last checkpoint is '
            'untouched')
      ckpt.save(done, st, {'step': done, 'phase': phase.name,
                           'phase_end': last_of_phase})
    if requested:
      logging.warning('%s received: saved step %d, stopping', requested, done)
      break
  writer.flush()
  return st


def _compile_phase_steps(config, phases, start, end, compiled, mesh, st,
                         arrays, root) -> dict[str, jax.stages.Compiled]:
  """The steps of the phases in [start, end), compiled together up front."""
  names = list(dict.fromkeys(p.name for p in phases
                             if p.start < end and p.end > start))
  if not names:
    return {}
  batch_sh = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((config.data.batch_size, *v.shape[1:]),
                                   v.dtype, sharding=batch_sh)
           for k, v in arrays.items()}
  logging.info('compiling the %s step(s)', ', '.join(names))
  t = time.perf_counter()
  step_fns = jitted.compile_ahead({n: compiled[n] for n in names},
                                  (st, batch, root))
  logging.info('compiled in %.1f s', time.perf_counter() - t)
  # Processes compile at different speeds (one may load the persistent
  # cache, another not); they enter the first collective together.
  sharding.wait_for_all_processes(f'sgan_jax compiled {start}-{end}')
  return step_fns


class _StopRequest:
  """Turns SIGTERM/SIGINT into a stop the loop reads between steps.

  In one process, a handler sets a flag. Processes of a multi-process run
  must all stop after the same step, or those that go on wait forever in a
  collective the others never join; there JAX's preemption service (started
  by jax.distributed.initialize) catches SIGTERM on any process and the
  processes agree on a step, which `reached_preemption_sync_point` reports.
  No handler of ours is installed then: it would replace the service's.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None
    self._previous = {}
    self._multi_process = jax.process_count() > 1

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name

  def poll(self, step: int) -> str | None:
    """The signal's name if the loop must save and stop after `step`.

    Called once after every step, by every process (the preemption
    service's protocol needs each step).
    """
    if self._multi_process:
      return ('SIGTERM' if multihost_utils.reached_preemption_sync_point(step)
              else None)
    return self.requested

  def __enter__(self):
    # Signal handlers can only be installed from the main thread.
    if (not self._multi_process
        and threading.current_thread() is threading.main_thread()):
      for sig in self._SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def evaluate_encoder(config: ml_collections.ConfigDict, eval_step,
                     st: state_lib.SGANState, mesh,
                     arrays: dict[str, np.ndarray] | None = None) -> float:
  """E's accuracy on the whole test split (the last batch padded, masked).

  Args:
    config: the run's config.
    eval_step: the compiled `encoder_eval` step.
    st: the state after E's phase.
    mesh: the run's mesh.
    arrays: the test split, if already loaded; else loaded here.

  Returns:
    The fraction of test images E classifies correctly.
  """
  if arrays is None:
    arrays, _ = input_pipeline.load_split(config.data, 'test')
  n = len(arrays['label'])
  b = config.data.batch_size
  correct = 0
  for s in range(0, n, b):
    idx = np.arange(s, s + b)
    local = {'image': arrays['image'][np.minimum(idx, n - 1)],
             'label': arrays['label'][np.minimum(idx, n - 1)],
             'mask': idx < n}
    # Single-process evaluation of the host's full test set.
    batch = jax.device_put(local, sharding.batch_sharding(mesh))
    correct += int(eval_step(st, batch))
  return correct / n


class _NullWriter:
  """Stands in for the TensorBoard writer where it cannot be used."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def write_images(self, step, images):
    del step, images

  def flush(self):
    pass


def _make_writer(workdir: str):
  """TensorBoard events from process 0 (the console gets the compact
  progress line instead of clu's logging writer)."""
  if jax.process_index() > 0:
    return _NullWriter()
  writer = tensorflow_cpu.summary_writer(workdir)
  if writer is None:
    logging.warning('clu/TensorFlow unavailable: no TensorBoard events, '
                    'console progress only')
    return _NullWriter()
  return writer


class _Progress:
  """Console progress: rate over the last interval and an ETA."""

  def __init__(self, total: int, start: int):
    self.total = total
    self._last = (start, time.time())

  def line(self, step: int, phase: schedule_lib.Phase) -> tuple[str, float]:
    s0, t0 = self._last
    now = time.time()
    rate = (step - s0) / max(now - t0, 1e-9)
    self._last = (step, now)
    eta = (self.total - step) / max(rate, 1e-9)
    return (f'step {step}/{self.total} [{phase.name} '
            f'{step - phase.start}/{phase.length}] {rate:.2f} it/s, ETA '
            f'{_hms(eta)}'), rate


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'


def _log_metrics(writer, step: int, phase, metrics: dict[str, Any],
                 progress: _Progress) -> None:
  scalars = {k: float(v) for k, v in metrics.items()}
  bad = [k for k, v in scalars.items() if not np.isfinite(v)]
  if bad:
    raise FloatingPointError(
        f'non-finite {", ".join(bad)} at step {step} (phase {phase.name}); '
        'the last checkpoint is untouched')
  line, rate = progress.line(step, phase)
  scalars['steps_per_sec'] = rate
  writer.write_scalars(step, scalars)
  short = ' '.join(f'{k.split("/", 1)[-1]}={v:.3g}'
                   for k, v in sorted(metrics.items())
                   if k.endswith(('d_loss', 'g_loss', 'g_cond', 'sample_acc',
                                  'ent_rel', 'loss', 'train_acc')))
  logging.info('%s | %s', line, short)


def _log_evaluation(writer, step: int, scores: dict[str, float]) -> None:
  # Not through _log_metrics: a ratio over a zero reference may be NaN
  # without anything having diverged.
  writer.write_scalars(step, {evaluation.TAG_PREFIX + k: v
                              for k, v in scores.items()})
  judged = (f' judge_cond_acc={scores["judge_cond_acc"]:.3f} (real '
            f'{scores["real_judge_cond_acc"]:.3f}) judge_fid='
            f'{scores["judge_fid"]:.3g} (floor {scores["real_judge_fid"]:.3g})'
            f' diversity_ratio_judge={scores["diversity_ratio_judge"]:.3g}'
            if 'judge_cond_acc' in scores else '')
  logging.info('eval at step %d: cond_acc=%.3f (real %.3f)%s e_fid=%.3g '
               '(floor %.3g) diversity_ratio=%.3g (pixels %.3g)', step,
               scores['cond_acc'], scores['real_cond_acc'], judged,
               scores['e_fid'], scores['real_e_fid'],
               scores['diversity_ratio'], scores['diversity_ratio_pixel'])


class _GridWriter:
  """Class-conditional grids (one row per class) with a fixed key."""

  def __init__(self, models, config, sample_fn, mesh, root, workdir, writer,
               per_class: int = 10):
    self._labels = sampling.grid_labels(models.num_classes, per_class)
    self._rows = models.num_classes
    if jax.process_count() > 1:
      # `sampling.generate` reads the images back with np.asarray, which
      # cannot fetch a batch sharded over other processes' devices; a
      # replicated output (an all-gather inside the compiled call) gives
      # every process the whole grid. Every process must call `write`.
      sample_fn = jitted.jit_sample(models, mesh, replicate_output=True)
    self._sample_fn = sample_fn
    self._calibrate = sampling.BatchStatsCalibrator(models, config, mesh)
    self._key = rng.eval_key(root)
    self._sharding = sharding.batch_sharding(mesh)
    self._dir = epath.Path(workdir) / 'samples'
    self._writer = writer
    self._batch = _round_up(len(self._labels), mesh.devices.size)

  def write(self, step: int, st: state_lib.SGANState) -> str:
    images = sampling.generate(self._sample_fn, self._calibrate(st),
                               self._labels, self._key,
                               batch_size=self._batch,
                               sharding=self._sharding)
    grid = sampling.image_grid(images, self._rows)
    path = self._dir / f'step_{step:08d}.png'
    if jax.process_index() == 0:
      sampling.save_png(path, grid)
      self._writer.write_images(step, {'samples': grid[None]})
    return path


def _round_up(n: int, k: int) -> int:
  return -(-n // k) * k
