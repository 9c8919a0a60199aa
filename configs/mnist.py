"""SGAN on MNIST with the original MNIST networks.

Full run (paper scale: 200 epochs per phase):
  python -m sgan_jax.main --config=configs/mnist.py --workdir=runs/mnist

Offline (the official archives in a folder, nothing downloaded):
  python -m sgan_jax.main --config=configs/mnist.py:tiny --workdir=/tmp/w \
      --config.data.manual_dir=../shared/data/mnist

Presets: `tiny` (CI smoke, seconds).
"""

from sgan_jax import config_base


def get_config(arg: str | None = None):
  c = config_base.base_config('mnist', arch='mnist')
  c.data.image_range = 'unit'        # the original G0 ends in a sigmoid
  c.model.q_activation = 'sigmoid'
  c.loss.adversarial = 'non_saturating'
  c.loss.joint_lower_weight = 0.0    # original MNIST joint: G1 sees L_G1 only
  return config_base.finalize(c, arg, {'tiny': config_base.tiny})
