"""The config schema shared by every dataset config.

Dataset configs (configs/*.py) call `base_config` and override values; they
never copy the schema. Every key exists here, so `lock()` turns a typo'd
command-line override into an error.
"""

from collections.abc import Callable

import ml_collections
from ml_collections import config_dict


def stack_config(z_dim: int, lr: float) -> ml_collections.ConfigDict:
  """Per-stack settings; index 0 is the pixel level."""
  return ml_collections.ConfigDict({
      'z_dim': z_dim,
      'g_lr': lr,
      'd_lr': lr,
      'd_input_noise': 0.0,        # std of Gaussian noise on D's input
      'd_dropout': 0.0,            # D0 dropout, independent phase
      'd_dropout_joint': 0.0,      # D0 dropout, joint phase
      'd_hidden_noise_joint': 0.0,  # feature-D noise on hidden layers, joint
  })


def base_config(dataset: str, arch: str) -> ml_collections.ConfigDict:
  """Defaults of the original code (Adam 1e-4, beta1 0.5, batch 100, ...)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Computation dtype of the networks; params and optimizer stay float32.
  c.dtype = 'float32'

  c.data = ml_collections.ConfigDict()
  c.data.name = dataset                         # tfds name
  c.data.data_dir = config_dict.placeholder(str)    # tfds data dir
  c.data.manual_dir = config_dict.placeholder(str)  # offline source files
  c.data.max_examples = config_dict.placeholder(int)  # first N (tiny runs)
  c.data.batch_size = 100                       # global, all devices
  # 'unit' [0,1], 'symmetric' [-1,1], 'mean_subtracted' x/255 - mean image.
  c.data.image_range = 'unit'

  c.model = ml_collections.ConfigDict()
  c.model.arch = arch                # 'mnist' | 'cifar' network family
  # Encoder levels between image and label, one stack above each and one
  # at the pixels: () is a single conditional GAN G(y, z) -> image, ('fc3',)
  # the paper's two stacks, ('pool2', 'fc3') three.
  c.model.levels = ('fc3',)
  c.model.width = 1.0                # multiplies every hidden width
  c.model.conv_impl = 'auto'         # 'xla' | 'fast' | 'auto' (fast on CPU)
  c.model.d_class_logits = False     # K-class (Improved-GAN) D heads
  c.model.q_activation = 'sigmoid'   # Q head output: 'sigmoid' | 'linear'

  c.encoder = ml_collections.ConfigDict()
  c.encoder.lr = 1e-3
  # Cosine-decay E's learning rate to 0 over its phase (else constant).
  c.encoder.cosine_decay = False
  # Mirror each training image left-right with probability 1/2 in E's phase
  # only (the paper does so on CIFAR-10; the GANs see unflipped data).
  c.encoder.random_flip = False

  c.stacks = [stack_config(50, 1e-4), stack_config(50, 1e-4)]

  c.loss = ml_collections.ConfigDict()
  # 'non_saturating' | 'saturating' | 'hinge' | 'least_squares'
  c.loss.adversarial = 'non_saturating'
  c.loss.adv_weight = 1.0
  c.loss.cond_weight = 1.0
  c.loss.ent_weight = 10.0
  c.loss.class_weight = 1.0          # K-class D's cross-entropy on real data
  # Joint phase: how much of a lower stack's loss reaches the stacks above.
  c.loss.joint_lower_weight = 0.0

  c.optim = ml_collections.ConfigDict()
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.eps_root = 1e-8            # the original's epsilon inside the sqrt
  c.optim.ema_decay = 0.0            # of G's params, used for sampling
  # On a non-finite loss or parameter: False stops the run at the next log
  # step (the last checkpoint stays the last good one); True skips that
  # update and counts it in the `skipped` metric.
  c.optim.skip_nonfinite_updates = False

  c.schedule = ml_collections.ConfigDict()
  c.schedule.encoder_steps = 6000
  c.schedule.stack_steps = (120000, 120000)   # independent phase, per stack
  c.schedule.joint_steps = 120000
  c.schedule.g_steps = 1                      # G updates per D update
  c.schedule.g_steps_by_d_loss = False        # original CIFAR 1/3/5/7 rule
  c.schedule.reset_optimizers_for_joint = True

  c.log = ml_collections.ConfigDict()
  c.log.log_every = 100
  c.log.sample_every = 2000
  c.log.ckpt_every = 2000
  c.log.keep = 3
  # Sample-quality metrics (sgan_jax/evaluation.py) every N steps; 0 = off.
  c.log.eval_every = 10000
  c.log.eval_num = 10000             # samples per evaluation
  # Training steps of the independent classifier behind `judge_cond_acc`,
  # `judge_fid` and `diversity_ratio_judge` (sgan_jax/judge.py); 0: no judge.
  c.log.judge_steps = 0
  # Samples (grids, evaluation, the sample CLI) use BN statistics of G's EMA
  # params recomputed on this many generated samples (sampling.py); 0: G's
  # training running averages, which belong to the live params.
  c.log.bn_calibration_num = 0
  return c


def tiny(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a CI smoke run of a few seconds per phase."""
  c.data.max_examples = 200
  c.data.batch_size = 16
  c.model.width = 0.125
  c.schedule.encoder_steps = 3
  c.schedule.stack_steps = (2,) * len(c.stacks)
  c.schedule.joint_steps = 2
  c.log.log_every = 1
  c.log.sample_every = 4
  c.log.ckpt_every = 3
  c.log.eval_every = 0
  c.log.judge_steps = 3
  if c.log.bn_calibration_num:
    c.log.bn_calibration_num = 32


# Keys added to the schema after runs existed, with the value that does what
# those runs did: a saved config.json without the key reads as that value.
ADDED_KEYS = {'encoder.random_flip': False}


def with_added_keys(saved: dict) -> dict:
  """A saved config (config.json, parsed) with `ADDED_KEYS` filled in."""
  for key, value in ADDED_KEYS.items():
    section, name = key.split('.')
    saved.setdefault(section, {}).setdefault(name, value)
  return saved


def set_levels(c: ml_collections.ConfigDict, levels: tuple[str, ...]) -> None:
  """Rebuilds the stack list for other encoder levels (see `model.levels`).

  The pixel stack keeps `stacks[0]` and the label-conditioned top stack the
  last entry; a feature stack added between them copies the top stack's
  settings and phase length (it is the same kind of MLP GAN). A single GAN
  (`levels=()`) keeps the pixel stack and trains it for its own steps plus
  the joint phase's, which one stack has no use for.

  Args:
    c: the config, changed in place (works on a locked one).
    levels: encoder levels between image and label, bottom up.
  """
  levels = tuple(levels)
  stacks, steps = list(c.stacks), list(c.schedule.stack_steps)
  if not levels:
    c.stacks = [stacks[0]]
    c.schedule.stack_steps = (steps[0] + c.schedule.joint_steps,)
    c.schedule.joint_steps = 0
  else:
    middle = [ml_collections.ConfigDict(stacks[-1].to_dict())
              for _ in levels[1:]]
    if c.is_locked:
      for m in middle:
        m.lock()
    c.stacks = [stacks[0]] + middle + [stacks[-1]]
    c.schedule.stack_steps = tuple([steps[0]] + [steps[-1]] * len(middle)
                                   + [steps[-1]])
  c.model.levels = levels


def single_gan(c: ml_collections.ConfigDict) -> None:
  """One conditional GAN G(y, z) -> image: the paper's baselines."""
  set_levels(c, ())


def three_stacks(c: ml_collections.ConfigDict) -> None:
  """Three stacks: label -> fc3 -> pool2 -> image."""
  set_levels(c, ('pool2', 'fc3'))


def finalize(c: ml_collections.ConfigDict, arg: str | None,
             presets: dict[str, Callable[[ml_collections.ConfigDict], None]]
             ) -> ml_collections.ConfigDict:
  """Applies the presets named by `arg` and locks.

  Args:
    c: the dataset's full-run config.
    arg: what follows the config file's ':' (None = full run): preset names
      joined by ',' (`tiny,three_stacks`), applied in that order. Every
      dataset has `single_gan` and `three_stacks` besides its own presets.
    presets: the dataset's own presets by name.

  Returns:
    The locked config.
  """
  presets = dict(presets, single_gan=single_gan, three_stacks=three_stacks)
  names = arg.split(',') if arg else []
  unknown = [n for n in names if n not in presets]
  if unknown:
    raise ValueError(f'unknown preset {unknown[0]!r}; expected one or more '
                     f'of {sorted(presets)} joined by ","')
  for name in names:
    presets[name](c)
  for s in c.stacks:
    s.lock()
  c.lock()
  return c


def original_cifar(c: ml_collections.ConfigDict) -> None:
  """The original CIFAR-10 code's networks, losses and schedule
  (shared/reference/sgan_original_code.md sections 2-7)."""
  c.data.image_range = 'mean_subtracted'   # x/255 - per-pixel train mean
  c.model.arch = 'cifar'
  c.model.d_class_logits = True            # Improved-GAN K-class D
  c.model.q_activation = 'linear'
  c.stacks = [stack_config(16, 1e-4), stack_config(50, 1e-4)]
  c.stacks[0].d_input_noise = 0.05
  c.stacks[0].d_dropout = 0.1
  c.stacks[0].d_dropout_joint = 0.3
  c.stacks[1].d_input_noise = 0.2
  c.stacks[1].d_hidden_noise_joint = 0.2
  c.loss.adversarial = 'saturating'
  c.loss.joint_lower_weight = 0.01         # G1 minimises L_G1 + 0.01 L_G0
  c.schedule.g_steps_by_d_loss = True      # 1/3/5/7 G updates per D update
  c.schedule.encoder_steps = 20000
  c.schedule.stack_steps = (100000, 100000)  # 200 epochs of 500 batches
  c.schedule.joint_steps = 100000
