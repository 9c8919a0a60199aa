"""SGAN on CIFAR-10 with the original CIFAR networks, losses and schedule.

Full run (200 epochs per phase, as the original code):
  python -m sgan_jax.main --config=configs/cifar10.py --workdir=runs/cifar10

Offline, from the JPEG re-encoding of CIFAR-10 in a folder (lossy, not the
original pixels; see shared/data/PROVENANCE.md):
  python -m sgan_jax.main --config=configs/cifar10.py:tiny --workdir=/tmp/c \
      --config.data.manual_dir=../shared/data/cifar10

Presets: `tiny` (CI smoke, seconds); `single_gan` and `three_stacks` (all
configs, config_base.py), combined with ",": `:tiny,three_stacks`.
"""

from sgan_jax import config_base


def get_config(arg: str | None = None):
  c = config_base.base_config('cifar10', arch='cifar')
  config_base.original_cifar(c)
  # Paper Sec. 4: "On CIFAR-10 we apply horizontal flipping to train the
  # encoder. No data augmentation is used on other datasets."
  c.encoder.random_flip = True
  return config_base.finalize(c, arg, {'tiny': config_base.tiny})
