"""sgan_jax.xla_cpu_flags: which kernels XLA:CPU gives the convolutions.

Each case runs in a fresh interpreter, since XLA reads its flags once per
process.
"""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest

# Prints use_eigen_convolutions()'s result, whether XLA_FLAGS then holds the
# flag (and how often), and how many convolutions YNNPACK got.
_PROBE = textwrap.dedent('''
    import os, sys
    import jax, jax.numpy as jnp
    from sgan_jax import xla_cpu_flags
    if sys.argv[1] == 'late':
      jax.devices()  # Starts the backend first.
    applied = xla_cpu_flags.use_eigen_convolutions()
    again = xla_cpu_flags.use_eigen_convolutions()
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    hlo = conv.lower(jnp.ones((10, 12, 12, 64)),
                     jnp.ones((3, 3, 64, 64))).compile().as_text()
    flags = os.environ.get('XLA_FLAGS', '').split()
    print(applied, again, flags.count(xla_cpu_flags.EIGEN_CONVOLUTIONS),
          hlo.count('__ynn_fusion'))
''')


def _probe(xla_flags: str, when: str = 'early') -> tuple[list[str], str]:
  """(the probe's printed fields, its stderr)."""
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-c', _PROBE, when], env=env,
                        check=True, capture_output=True, text=True)
  return done.stdout.split(), done.stderr


class UseEigenConvolutionsTest(absltest.TestCase):

  def test_moves_convolutions_off_ynnpack(self):
    # With the flag the convolution is XLA's own (Eigen) and XLA_FLAGS holds
    # the flag once, however often it is asked for.
    self.assertEqual(_probe('')[0], ['True', 'True', '1', '0'])

  def test_too_late_changes_nothing_and_says_so(self):
    # Once the backend exists, YNNPACK keeps the convolution (as without
    # the flag) and XLA_FLAGS is left alone.
    fields, stderr = _probe('', 'late')
    self.assertEqual(fields, ['False', 'False', '0', '1'])
    self.assertIn('already initialised', stderr)

  def test_user_setting_wins(self):
    # An empty list (no YNNPACK at all) is the user's choice and stays.
    fields, _ = _probe('--xla_cpu_experimental_ynn_fusion_type=')
    self.assertEqual(fields, ['False', 'False', '0', '0'])


if __name__ == '__main__':
  absltest.main()
