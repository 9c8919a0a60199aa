"""Pure training steps: (state, batch, root_key) -> (state, metrics).

Builders close over static module definitions and scalar hyper-parameters
(never the ConfigDict), so `train.py` can jit each step once with donation and
shardings. Every step derives its noise from (root_key, state.step) through
the named streams of `rng.py` and draws it for the global batch inside the
compiled function, which is why a run gives the same numbers on 1 or N devices
and after a resume.

A training *iteration* of a stack is one D update followed by one or more G
updates (`make_stack_step`); the joint iteration does the same for all stacks
at once, top-down (`make_joint_step`).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sgan_jax import losses
from sgan_jax import models as models_lib
from sgan_jax import rng
from sgan_jax import state as state_lib

Metrics = dict[str, jax.Array]
Step = Callable[[state_lib.SGANState, dict[str, jax.Array], jax.Array],
                tuple[state_lib.SGANState, Metrics]]

# The original CIFAR heuristic: more G updates the better D is doing, judged
# by D's adversarial loss (0.693 = chance).
_G_STEP_THRESHOLDS = ((0.65, 1), (0.5, 3), (0.3, 5))
_G_STEP_MAX = 7


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Scalar hyper-parameters the steps close over."""
  adversarial: str = 'non_saturating'
  adv_weight: float = 1.0
  cond_weight: float = 1.0
  ent_weight: float = 10.0
  class_weight: float = 1.0
  joint_lower_weight: float = 0.0
  ema_decay: float = 0.0
  pixel_scale: float = 1.0
  g_steps: int = 1
  g_steps_by_d_loss: bool = False
  encoder_flip: bool = False

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'StepConfig':
    return cls(
        adversarial=config.loss.adversarial,
        adv_weight=config.loss.adv_weight,
        cond_weight=config.loss.cond_weight,
        ent_weight=config.loss.ent_weight,
        class_weight=config.loss.class_weight,
        joint_lower_weight=config.loss.joint_lower_weight,
        ema_decay=config.optim.ema_decay,
        pixel_scale=pixel_scale(config.data.image_range),
        g_steps=int(config.schedule.g_steps),
        g_steps_by_d_loss=config.schedule.g_steps_by_d_loss,
        encoder_flip=config.encoder.random_flip)


IMAGE_RANGES = ('unit', 'symmetric', 'mean_subtracted')


def pixel_scale(image_range: str) -> float:
  """x_model = scale * x01 + offset; see `state.SGANState.pixel_offset`."""
  if image_range not in IMAGE_RANGES:
    raise ValueError(f'config.data.image_range must be one of {IMAGE_RANGES},'
                     f' got {image_range!r}')
  return 2.0 if image_range == 'symmetric' else 1.0


def pixel_offset(image_range: str, train_images: np.ndarray) -> np.ndarray:
  """The offset of `state.SGANState.pixel_offset` for a data set."""
  shape = train_images.shape[1:]
  if image_range == 'mean_subtracted':
    # Mean of x/255 in float64: exact enough and order-independent.
    return -(train_images.astype(np.float64).mean(axis=0) / 255.0).astype(
        np.float32)
  pixel_scale(image_range)  # Validates the name.
  value = -1.0 if image_range == 'symmetric' else 0.0
  return np.full(shape, value, np.float32)


def to_model_space(x01: jax.Array, st: state_lib.SGANState,
                   hp: StepConfig) -> jax.Array:
  return hp.pixel_scale * x01 + st.pixel_offset


def images01(batch: dict[str, jax.Array]) -> jax.Array:
  """uint8 batch images -> float32 in [0, 1] (converted on device so the host
  ships 4x fewer bytes)."""
  return batch['image'].astype(jnp.float32) / 255.0


def encode(models: models_lib.Models, st: state_lib.SGANState, h: jax.Array,
           start: str, stop: str) -> jax.Array:
  """E from level `start` to `stop`; E is frozen outside its own phase."""
  params = jax.lax.stop_gradient(st.encoder.params)
  return models.encoder.apply({'params': params}, h, start=start, stop=stop)


def real_levels(models: models_lib.Models, st: state_lib.SGANState,
                batch: dict[str, jax.Array], hp: StepConfig
                ) -> list[jax.Array]:
  """Real representations h_0 .. h_N of a batch; h_N is the one-hot label."""
  hs = [to_model_space(images01(batch), st, hp)]
  for sm in models.stacks[:-1]:
    hs.append(encode(models, st, hs[-1], sm.level, sm.cond_level))
  hs.append(jax.nn.one_hot(batch['label'], models.num_classes))
  return hs


def _uniform(key: jax.Array, batch: int, z_dim: int) -> jax.Array:
  # U[0, 1), as the original; Q heads with a sigmoid match its range.
  return jax.random.uniform(rng.stream(key, rng.Z), (batch, z_dim))


def _generate(sm: models_lib.StackModels, st: state_lib.SGANState,
              g_vars: dict[str, Any], cond: jax.Array, z: jax.Array,
              hp: StepConfig) -> tuple[jax.Array, Any]:
  """h_i = G_i(cond, z) in training mode; images come out in model space."""
  h, updates = sm.generator.apply(g_vars, cond, z, train=True,
                                  mutable=['batch_stats'])
  if sm.level == 'image':
    h = to_model_space(h, st, hp)
  return h, updates['batch_stats']


def _discriminate(module, d_vars, h, key):
  """D in training mode (batch-stat BN, dropout, noise), as the original."""
  (logits, z_pred), updates = module.apply(
      d_vars, h, train=True, mutable=['batch_stats'],
      rngs={'dropout': rng.stream(key, rng.D_DROPOUT),
            'noise': rng.stream(key, rng.D_INPUT_NOISE)})
  return logits, z_pred, updates['batch_stats']


def _d_loss(module, d_params, d_stats, h_real, h_fake, z, labels, key,
            hp: StepConfig):
  """D_i's loss; real and fake go through separate passes (separate BN
  statistics), as in the original."""
  # Named streams: `key` also draws the fake batch's z (stream Z), so the
  # passes' dropout and noise must not hang below fold_in(key, Z).
  real_logits, _, stats = _discriminate(
      module, {'params': d_params, 'batch_stats': d_stats}, h_real,
      rng.stream(key, rng.D_REAL_PASS))
  fake_logits, z_pred, stats = _discriminate(
      module, {'params': d_params, 'batch_stats': stats}, h_fake,
      rng.stream(key, rng.D_FAKE_PASS))
  adv = losses.adversarial_losses(real_logits, fake_logits,
                                  kind=hp.adversarial)
  ent = losses.entropy_loss(z_pred, z)
  loss = hp.adv_weight * adv.d + hp.ent_weight * ent
  terms = {'d_adv': adv.d, 'd_real': adv.d_real, 'd_fake': adv.d_fake,
           'd_ent': ent,
           'd_real_acc': jnp.mean(losses.realness_logit(real_logits) > 0),
           'd_fake_acc': jnp.mean(losses.realness_logit(fake_logits) < 0)}
  if real_logits.shape[-1] > 1:
    # The K-class (Improved-GAN) D also classifies real data.
    cls = losses.class_loss(real_logits, labels)
    loss = loss + hp.class_weight * cls
    terms['d_class'] = cls
  terms['d_loss'] = loss
  return loss, (terms, stats)


def _g_loss(models, sm, st, d_module, d_vars, h_fake, cond_target, z, labels,
            key, hp: StepConfig):
  """G_i's loss terms given its output; `cond_target` is h_{i+1} (labels for
  the top stack)."""
  fake_logits, z_pred, _ = _discriminate(d_module, d_vars, h_fake, key)
  adv = losses.generator_adversarial_loss(fake_logits, kind=hp.adversarial)
  pred = encode(models, st, h_fake, sm.level, sm.cond_level)
  cond = losses.conditional_loss(pred, cond_target, kind=sm.conditional_kind)
  ent = losses.entropy_loss(z_pred, z)
  loss = hp.adv_weight * adv + hp.cond_weight * cond + hp.ent_weight * ent
  # How often E labels the sample with its conditioning class: the simplest
  # check that the stack (and everything below it) respects its input. E
  # continues from the conditional level, so its lower layers run once.
  logits = pred if sm.cond_level == 'logits' else encode(
      models, st, pred, sm.cond_level, 'logits')
  terms = {'g_adv': adv, 'g_cond': cond, 'g_ent': ent, 'g_loss': loss,
           'sample_acc': losses.accuracy(logits, labels),
           # Q's error relative to Var(U[0,1)) = 1/12: 1 means Q predicts
           # nothing beyond the mean of z.
           'ent_rel': ent * 12.0}
  return loss, terms


def _ema(ema, net: state_lib.NetState, decay: float):
  """The moving average of G's params after its update `net.step`.

  The decay warms up as min(decay, (1 + t) / (10 + t)) over G's updates t
  (as tf.train.ExponentialMovingAverage with num_updates): the average starts
  at the initial params, so a fixed 0.999 would keep ~55% of them after 600
  updates, and short runs would sample from a half-initial generator.
  """
  t = net.step.astype(jnp.float32)
  d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, net.params)


def _replace_stack(st, i, **kw):
  stacks = list(st.stacks)
  stacks[i] = stacks[i].replace(**kw)
  return st.replace(stacks=tuple(stacks))


def _prefix(prefix: str, metrics: Metrics) -> Metrics:
  return {f'{prefix}/{k}': v for k, v in metrics.items()}


def make_d_step(models: models_lib.Models, i: int, hp: StepConfig) -> Step:
  """One update of D_i (and its Q head) on real h_i vs G_i(h_{i+1}, z_i).

  The third argument is the key of this update (not the root key): it is
  called from `make_stack_step` with a key derived from the step.
  """
  sm = models.stacks[i]

  def d_step(st, batch, key):
    hs = real_levels(models, st, batch, hp)
    stack = st.stacks[i]
    z = _uniform(key, hs[i].shape[0], sm.z_dim)
    # G only produces the fake batch here: no gradient, and its BN running
    # averages move only in G's own update, as in the original.
    h_fake, _ = _generate(sm, st, stack.g.variables(), hs[i + 1], z, hp)
    h_fake = jax.lax.stop_gradient(h_fake)
    grad_fn = jax.value_and_grad(_d_loss, argnums=1, has_aux=True)
    (_, (terms, stats)), grads = grad_fn(
        sm.discriminator, stack.d.params, stack.d.batch_stats, hs[i], h_fake,
        z, batch['label'], key, hp)
    d = stack.d.apply_gradients(grads=grads, batch_stats=stats)
    return _replace_stack(st, i, d=d), terms

  return d_step


def make_g_step(models: models_lib.Models, i: int, hp: StepConfig) -> Step:
  """One update of G_i on adversarial + conditional + entropy losses.

  Q_i is D_i's head, updated in the D step; here D_i's params are constants.
  """
  sm = models.stacks[i]

  def g_step(st, batch, key):
    hs = real_levels(models, st, batch, hp)
    stack = st.stacks[i]
    z = _uniform(key, hs[i].shape[0], sm.z_dim)
    target = batch['label'] if i == models.num_stacks - 1 else hs[i + 1]

    def loss_fn(g_params):
      h_fake, stats = _generate(sm, st, stack.g.variables(g_params),
                                hs[i + 1], z, hp)
      loss, terms = _g_loss(models, sm, st, sm.discriminator,
                            stack.d.variables(), h_fake, target, z,
                            batch['label'], key, hp)
      return loss, (terms, stats)

    (_, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        stack.g.params)
    g = stack.g.apply_gradients(grads=grads, batch_stats=stats)
    return _replace_stack(st, i, g=g,
                          g_ema=_ema(stack.g_ema, g, hp.ema_decay)), terms

  return g_step


def _num_g_steps(d_adv: jax.Array, hp: StepConfig) -> int | jax.Array:
  """G updates this iteration: the config's fixed count (a Python int), or
  the heuristic's choice from D's loss (traced)."""
  if not hp.g_steps_by_d_loss:
    return hp.g_steps
  n = jnp.asarray(_G_STEP_MAX, jnp.int32)
  for threshold, steps in reversed(_G_STEP_THRESHOLDS):
    n = jnp.where(d_adv > threshold, steps, n)
  return n


def _repeat_g(g_step, st, batch, key, n: int | jax.Array):
  """The first G update, then n - 1 more with fresh noise each.

  A traced count (the heuristic) becomes a while loop, so it needs no host
  round trip. A fixed count of 1 has no loop at all: a loop that never runs
  would still be traced and lowered, a whole second G update (MNIST stack
  0: 1 s of its 3 s of lowering; XLA then drops it before code generation).
  """
  st, terms = g_step(st, batch, jax.random.fold_in(key, 0))
  if isinstance(n, int) and n == 1:
    return st, terms
  def body(j, carry):
    return g_step(carry[0], batch, jax.random.fold_in(key, j))
  return jax.lax.fori_loop(1, n, body, (st, terms))


def make_stack_step(models: models_lib.Models, i: int,
                    hp: StepConfig) -> Step:
  """One independent-phase iteration of stack i: D update, then G update(s).

  Stack i is conditioned on the real encoder features h_{i+1} of the batch.
  """
  d_step, g_step = make_d_step(models, i, hp), make_g_step(models, i, hp)

  def train_step(st, batch, root_key):
    key = rng.stack_key(rng.step_key(root_key, st.step), i)
    st, d_terms = d_step(st, batch, rng.stream(key, rng.D_STEP))
    n = _num_g_steps(d_terms['d_adv'], hp)
    st, g_terms = _repeat_g(g_step, st, batch, rng.stream(key, rng.G_STEP), n)
    metrics = _prefix(f'stack{i}', {**d_terms, **g_terms,
                                    'g_steps': jnp.asarray(n, jnp.int32)})
    return st.replace(step=st.step + 1), metrics

  return train_step


def _scale_gradient(x: jax.Array, scale: float) -> jax.Array:
  """Identity forward; multiplies the gradient by `scale` backward."""
  if scale == 1.0:
    return x
  stopped = jax.lax.stop_gradient(x)
  return stopped if scale == 0.0 else stopped + scale * (x - stopped)


def make_joint_step(models: models_lib.Models, hp: StepConfig) -> Step:
  """One joint iteration: all D_i, then all G_i, generating top-down.

  G_i is conditioned on the *generated* h_{i+1}. A lower stack's loss reaches
  the stacks above it through h_{i+1} scaled by `hp.joint_lower_weight`
  (original CIFAR: G1 minimises L_G1 + 0.01 L_G0; original MNIST: 0). The n_G
  heuristic, when on, reads D_0's adversarial loss, as the original.
  """
  stacks = models.stacks
  top = models.num_stacks - 1

  def generate_all(st, g_params, labels, key):
    """Top-down ĥ_N = onehot(y) -> ĥ_{N-1} -> ... -> ĥ_0; returns per-stack
    (condition, output, z) and G's new BN statistics."""
    h = jax.nn.one_hot(labels, models.num_classes)
    out, stats = [None] * len(stacks), [None] * len(stacks)
    for sm in reversed(stacks):
      i = sm.index
      cond = h if i == top else _scale_gradient(h, hp.joint_lower_weight)
      z = _uniform(rng.stack_key(key, i), labels.shape[0], sm.z_dim)
      h, stats[i] = _generate(sm, st, st.stacks[i].g.variables(g_params[i]),
                              cond, z, hp)
      out[i] = (cond, h, z)
    return out, stats

  def d_update(st, batch, key):
    hs = real_levels(models, st, batch, hp)
    g_params = tuple(s.g.params for s in st.stacks)
    fake, _ = generate_all(st, g_params, batch['label'], key)
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(d_params):
      total, terms, stats = 0.0, {}, []
      for sm in stacks:
        i = sm.index
        _, h_fake, z = fake[i]
        loss, (t, s) = _d_loss(sm.joint_discriminator, d_params[i],
                               st.stacks[i].d.batch_stats, hs[i], h_fake, z,
                               batch['label'], rng.stack_key(key, i), hp)
        total += loss
        terms.update(_prefix(f'stack{i}', t))
        stats.append(s)
      return total, (terms, stats)

    (_, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        tuple(s.d.params for s in st.stacks))
    new = tuple(s.replace(d=s.d.apply_gradients(grads=g, batch_stats=b))
                for s, g, b in zip(st.stacks, grads, stats))
    return st.replace(stacks=new), terms

  def g_update(st, batch, key):
    labels = batch['label']

    def loss_fn(g_params):
      fake, stats = generate_all(st, g_params, labels, key)
      total, terms = 0.0, {}
      for sm in stacks:
        i = sm.index
        cond, h_fake, z = fake[i]
        target = labels if i == top else cond
        loss, t = _g_loss(models, sm, st, sm.joint_discriminator,
                          st.stacks[i].d.variables(), h_fake, target, z,
                          labels, rng.stack_key(key, i), hp)
        total += loss
        terms.update(_prefix(f'stack{i}', t))
      return total, (terms, stats)

    (_, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        tuple(s.g.params for s in st.stacks))
    new = []
    for s, g, b in zip(st.stacks, grads, stats):
      g_net = s.g.apply_gradients(grads=g, batch_stats=b)
      new.append(s.replace(g=g_net,
                           g_ema=_ema(s.g_ema, g_net, hp.ema_decay)))
    return st.replace(stacks=tuple(new)), terms

  def train_step(st, batch, root_key):
    key = rng.step_key(root_key, st.step)
    st, d_terms = d_update(st, batch, rng.stream(key, rng.D_STEP))
    n = _num_g_steps(d_terms['stack0/d_adv'], hp)
    st, g_terms = _repeat_g(g_update, st, batch, rng.stream(key, rng.G_STEP),
                            n)
    metrics = _prefix('joint', {**d_terms, **g_terms,
                                'g_steps': jnp.asarray(n, jnp.int32)})
    return st.replace(step=st.step + 1), metrics

  return train_step


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
  """Mirrors each NHWC image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def make_encoder_step(models: models_lib.Models, hp: StepConfig) -> Step:
  """One Adam step of E on the class cross-entropy of real images (mirrored
  at random if `hp.encoder_flip`)."""

  def train_step(st, batch, root_key):
    x01 = images01(batch)
    if hp.encoder_flip:
      # Before the mean image is subtracted: the flip is of the photograph.
      x01 = random_flip(rng.stream(rng.step_key(root_key, st.step),
                                   rng.ENCODER_FLIP), x01)
    x = to_model_space(x01, st, hp)

    def loss_fn(params):
      logits = models.encoder.apply({'params': params}, x)
      return losses.class_loss(logits, batch['label']), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        st.encoder.params)
    metrics = {'encoder/loss': loss,
               'encoder/train_acc': losses.accuracy(logits, batch['label'])}
    return st.replace(step=st.step + 1,
                      encoder=st.encoder.apply_gradients(grads=grads)), metrics

  return train_step


def make_encoder_eval_step(models: models_lib.Models, hp: StepConfig
                           ) -> Callable[..., jax.Array]:
  """(state, batch) -> number of correctly classified examples whose
  `batch['mask']` is true (masks pad the last test batch)."""

  def eval_step(st, batch):
    x = to_model_space(images01(batch), st, hp)
    logits = models.encoder.apply({'params': st.encoder.params}, x)
    correct = jnp.argmax(logits, -1) == batch['label']
    return jnp.sum(jnp.logical_and(correct, batch['mask']))

  return eval_step
