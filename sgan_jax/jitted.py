"""Compiled steps: `jax.jit` with shardings and donation, built once per run.

Kept apart from `train.py` so benchmarks and tools can compile the exact
training steps without importing the data pipeline (TensorFlow).
"""

from collections.abc import Mapping, Sequence
from concurrent import futures
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from sgan_jax import models as models_lib
from sgan_jax import sampling
from sgan_jax import sharding
from sgan_jax import state as state_lib
from sgan_jax import steps
from sgan_jax import xla_cpu_flags


def all_finite(tree) -> jax.Array:
  """Whether every float leaf of `tree` is free of NaN and inf (a scalar)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)
                            if jnp.issubdtype(x.dtype, jnp.inexact)]))


def _skip_nonfinite(step_fn):
  """Keeps the old state (but advances the step) when an update produced a
  non-finite loss or parameter; `skipped` in the metrics counts it."""

  def step(st, batch, key):
    new, metrics = step_fn(st, batch, key)
    finite = all_finite((metrics, new))
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, st)
    metrics = dict(metrics, skipped=(~finite).astype(jnp.float32))
    # Non-finite metrics of a skipped step would stop the run at a log step.
    metrics = jax.tree.map(lambda m: jnp.where(finite, m, 0.0), metrics)
    return kept.replace(step=new.step), metrics

  return step


def _jit_g0(fn, **jit_kwargs) -> jax.stages.Wrapped:
  """`jax.jit` of a function that runs G0, with
  `xla_cpu_flags.compiler_options()`.

  On CPU that is LLVM -O2 where the compile time is: the image-level steps
  take most of it, 16-20 % less at -O2 than at XLA's -O3 for the same speed
  (in-process A/B on the 2-core VM of benchmarks/RESULTS.md). The encoder
  and stack 1 steps compile in 2-3 s either way and ran 2-4 % slower at
  -O2 (31 alternating timings), so they keep XLA's default.
  """
  return jax.jit(fn, compiler_options=xla_cpu_flags.compiler_options(),
                 **jit_kwargs)


def compile_steps(models: models_lib.Models,
                  config: ml_collections.ConfigDict,
                  mesh: Mesh) -> dict[str, jax.stages.Wrapped]:
  """Jitted functions by name; each compiles once, on first use.

  Returns a dict with 'encoder', 'stack{i}' for every stack and 'joint'
  (all `(state, batch, root_key) -> (state, metrics)`), 'encoder_eval',
  'reset_optimizers', 'state_is_finite' and 'sample'. The functions that
  run G0 (stack 0, joint, sample) compile with
  `xla_cpu_flags.compiler_options()`.
  """
  hp = steps.StepConfig.from_config(config)
  repl = sharding.replicated(mesh)
  batch = sharding.batch_sharding(mesh)
  if config.optim.skip_nonfinite_updates:
    wrap = _skip_nonfinite
  else:
    wrap = lambda fn: fn

  def jit_step(fn, image_level: bool):
    fn = wrap(fn)
    # The state is donated: its buffers are reused for the new state, so a
    # step needs no second copy of every network and optimizer.
    return (_jit_g0 if image_level else jax.jit)(
        fn, in_shardings=(repl, batch, repl), out_shardings=(repl, repl),
        donate_argnums=0)

  compiled = {
      'encoder': jit_step(steps.make_encoder_step(models, hp),
                          image_level=False),
      'joint': jit_step(steps.make_joint_step(models, hp), image_level=True)}
  for i in range(models.num_stacks):
    compiled[f'stack{i}'] = jit_step(steps.make_stack_step(models, i, hp),
                                     image_level=i == 0)
  compiled['encoder_eval'] = jax.jit(
      steps.make_encoder_eval_step(models, hp), in_shardings=(repl, batch),
      out_shardings=repl)
  compiled['reset_optimizers'] = jax.jit(
      state_lib.reset_optimizers, in_shardings=repl, out_shardings=repl,
      donate_argnums=0)
  # Checked before each save: a checkpoint is never a diverged state.
  compiled['state_is_finite'] = jax.jit(all_finite, in_shardings=repl,
                                        out_shardings=repl)
  compiled['sample'] = jit_sample(models, mesh)
  return compiled


def jit_sample(models: models_lib.Models, mesh: Mesh, *,
               replicate_output: bool = False) -> jax.stages.Wrapped:
  """The jitted top-down sampler `(state, labels, indices, key) -> images`.

  Shared by training, `sample` and `evaluate`, so all of them compile it
  with `xla_cpu_flags.compiler_options()` (it runs G0, like the stack 0
  step: on CPU, MNIST at 1,000 images a call, -O2 compiles in ~2.4 s
  instead of ~3.0 s, to bitwise the same images).

  Args:
    models: the SGAN modules.
    mesh: device mesh; labels, indices and images are split over its batch
      axis, the state is replicated.
    replicate_output: gather the images onto every device instead (a
      multi-process run, where each process must read the whole batch).

  Returns:
    The jitted function; it compiles once per batch shape.
  """
  repl = sharding.replicated(mesh)
  batch = sharding.batch_sharding(mesh)
  return _jit_g0(sampling.make_sample_fn(models),
                 in_shardings=(repl, batch, batch, repl),
                 out_shardings=repl if replicate_output else batch)


def compile_ahead(fns: Mapping[str, jax.stages.Wrapped], args: Sequence[Any]
                  ) -> dict[str, jax.stages.Compiled]:
  """Lowers and compiles every function of `fns` for `args`, concurrently.

  XLA:CPU spreads one compile's code generation over the cores, but tracing,
  lowering and the rest of a compile run on one thread: compiling the
  phases' steps side by side fills some of the idle core (all MNIST steps on
  the 2-core VM: 49-53 s one after another, 44-54 s, mean ~49, together).
  Compiling up front also means no stall at a phase change. With the persistent
  compilation cache on (`cli.py`), a rerun loads them instead. Each compiles
  with its jit's options (`compile_steps` sets them).

  Args:
    fns: jitted functions by name, all taking `args`.
    args: arrays, or `jax.ShapeDtypeStruct`s with their shardings.

  Returns:
    The compiled executables by name; each takes arrays shaped, typed and
    sharded like `args` and never recompiles.
  """
  if not fns:
    return {}

  def compile_one(name):
    return name, fns[name].lower(*args).compile()

  with futures.ThreadPoolExecutor(len(fns)) as pool:
    return dict(pool.map(compile_one, fns))
