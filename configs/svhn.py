"""SGAN on SVHN (tfds `svhn_cropped`) with the CIFAR networks.

The original code has no SVHN script; the paper shows SVHN samples. This uses
the CIFAR-10 networks, losses and schedule on 32x32x3 SVHN.

  python -m sgan_jax.main --config=configs/svhn.py --workdir=runs/svhn

The first run downloads SVHN through tensorflow-datasets (internet needed
once); point --config.data.data_dir at a prepared tfds data dir to run
offline.

Presets: `tiny` (CI smoke, seconds); `single_gan` and `three_stacks` (all
configs, config_base.py), combined with ",": `:tiny,three_stacks`.
"""

from sgan_jax import config_base


def get_config(arg: str | None = None):
  c = config_base.base_config('svhn_cropped', arch='cifar')
  config_base.original_cifar(c)
  # 73,257 training images: 732 batches of 100 per epoch; 200 epochs per
  # phase, as CIFAR-10's 100,000 steps are 200 x 500.
  c.schedule.stack_steps = (146400, 146400)
  c.schedule.joint_steps = 146400
  return config_base.finalize(c, arg, {'tiny': config_base.tiny})
