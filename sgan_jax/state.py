"""The training state: one pytree for jit, sharding and orbax.

SGANState(step, encoder, stacks=(StackState(g, d, g_ema), ...), pixel_offset).
The phase of the schedule is not stored: it is a function of `step` and the
config (`schedule.Schedule`), so it can never disagree with the step.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from sgan_jax import models as models_lib
from sgan_jax import rng


class NetState(train_state.TrainState):
  """Params, optimizer state and BatchNorm statistics of one network."""
  batch_stats: Any = flax.struct.field(default_factory=dict)

  def variables(self, params=None) -> dict[str, Any]:
    """The `apply` variables, optionally with other params (e.g. G's EMA)."""
    return {'params': self.params if params is None else params,
            'batch_stats': self.batch_stats}


class StackState(flax.struct.PyTreeNode):
  """G_i, D_i (with its Q head) and the moving average of G_i's params."""
  g: NetState
  d: NetState
  g_ema: Any


class SGANState(flax.struct.PyTreeNode):
  """Everything that changes during a run.

  Attributes:
    step: global training step (iterations of every phase so far).
    encoder: E; trained in the first phase, frozen afterwards.
    stacks: StackState per stack, index 0 = pixel level.
    pixel_offset: (H, W, C) added to scale * x01 to get the model's pixel
      space (minus the per-pixel mean for mean-subtracted data, else a
      constant); a data statistic, fixed at the start of the run.
  """
  step: jax.Array
  encoder: NetState
  stacks: tuple[StackState, ...]
  pixel_offset: jax.Array


def adam(learning_rate: float, optim: ml_collections.ConfigDict
         ) -> optax.GradientTransformation:
  """The original code's Adam: epsilon inside the square root."""
  return optax.adam(learning_rate, b1=optim.b1, b2=optim.b2, eps=0.0,
                    eps_root=optim.eps_root)


def encoder_optimizer(config: ml_collections.ConfigDict
                      ) -> optax.GradientTransformation:
  """Adam for E, constant or cosine-decayed over the encoder phase."""
  lr = config.encoder.lr
  if config.encoder.cosine_decay:
    lr = optax.cosine_decay_schedule(
        lr, decay_steps=max(1, config.schedule.encoder_steps))
  return optax.adam(lr)


def _net(module, variables, tx) -> NetState:
  return NetState.create(
      apply_fn=None, params=variables['params'], tx=tx,
      batch_stats=variables.get('batch_stats', {}))


def create_state(models: models_lib.Models, config: ml_collections.ConfigDict,
                 key: jax.Array, pixel_offset: jax.Array) -> SGANState:
  """Initialises every network (pure; run it under jit with out_shardings).

  Args:
    models: the module definitions.
    config: the run config (reads `encoder.lr`, `stacks[i].g_lr/d_lr`,
      `optim`).
    key: the root key; parameters use its `rng.INIT` stream.
    pixel_offset: see `SGANState.pixel_offset`.

  Returns:
    A fresh SGANState at step 0.
  """
  key = rng.init_key(key)
  image = jnp.zeros((2, *models.image_shape), jnp.float32)
  enc_vars = models.encoder.init(rng.stream(key, rng.ENCODER), image)
  encoder = _net(models.encoder, enc_vars, encoder_optimizer(config))
  dims = dict(models.level_dims, image=None)
  stacks = []
  for sm, sc in zip(models.stacks, config.stacks):
    k = rng.stack_key(key, sm.index)
    cond = jnp.zeros((2, dims[sm.cond_level]), jnp.float32)
    z = jnp.zeros((2, sm.z_dim), jnp.float32)
    g_vars = sm.generator.init(rng.stream(k, rng.G_STEP), cond, z, train=False)
    h = image if sm.level == 'image' else jnp.zeros((2, dims[sm.level]))
    d_vars = sm.discriminator.init(
        {'params': rng.stream(k, rng.D_STEP),
         'dropout': rng.stream(k, rng.D_DROPOUT),
         'noise': rng.stream(k, rng.D_INPUT_NOISE)}, h, train=False)
    g = _net(sm.generator, g_vars, adam(sc.g_lr, config.optim))
    d = _net(sm.discriminator, d_vars, adam(sc.d_lr, config.optim))
    stacks.append(StackState(g=g, d=d, g_ema=g.params))
  return SGANState(step=jnp.zeros((), jnp.int32), encoder=encoder,
                   stacks=tuple(stacks),
                   pixel_offset=jnp.asarray(pixel_offset, jnp.float32))


def reset_optimizers(state: SGANState) -> SGANState:
  """Fresh Adam moments for every G and D, as the original joint phase."""
  def fresh(net: NetState) -> NetState:
    return net.replace(opt_state=net.tx.init(net.params))
  return state.replace(stacks=tuple(
      s.replace(g=fresh(s.g), d=fresh(s.d)) for s in state.stacks))
