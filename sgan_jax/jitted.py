"""Compiled steps: `jax.jit` with shardings and donation, built once per run.

Kept apart from `train.py` so benchmarks and tools can compile the exact
training steps without importing the data pipeline (TensorFlow).
"""

import jax
import ml_collections
from jax.sharding import Mesh

from sgan_jax import models as models_lib
from sgan_jax import sampling
from sgan_jax import sharding
from sgan_jax import state as state_lib
from sgan_jax import steps


def compile_steps(models: models_lib.Models,
                  config: ml_collections.ConfigDict,
                  mesh: Mesh) -> dict[str, jax.stages.Wrapped]:
  """Jitted functions by name; each compiles once, on first use.

  Returns a dict with 'encoder', 'stack{i}' for every stack and 'joint'
  (all `(state, batch, root_key) -> (state, metrics)`), 'encoder_eval',
  'reset_optimizers' and 'sample'.
  """
  hp = steps.StepConfig.from_config(config)
  repl = sharding.replicated(mesh)
  batch = sharding.batch_sharding(mesh)

  def jit_step(fn):
    # The state is donated: its buffers are reused for the new state, so a
    # step needs no second copy of every network and optimizer.
    return jax.jit(fn, in_shardings=(repl, batch, repl),
                   out_shardings=(repl, repl), donate_argnums=0)

  compiled = {'encoder': jit_step(steps.make_encoder_step(models, hp)),
              'joint': jit_step(steps.make_joint_step(models, hp))}
  for i in range(models.num_stacks):
    compiled[f'stack{i}'] = jit_step(steps.make_stack_step(models, i, hp))
  compiled['encoder_eval'] = jax.jit(
      steps.make_encoder_eval_step(models, hp), in_shardings=(repl, batch),
      out_shardings=repl)
  compiled['reset_optimizers'] = jax.jit(
      state_lib.reset_optimizers, in_shardings=repl, out_shardings=repl,
      donate_argnums=0)
  compiled['sample'] = jax.jit(
      sampling.make_sample_fn(models), in_shardings=(repl, batch, batch, repl),
      out_shardings=batch)
  return compiled
