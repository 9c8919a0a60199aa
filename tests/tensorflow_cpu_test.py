"""Tests for sgan_jax.tensorflow_cpu: TF starts only with its GPU hidden."""

import os
import subprocess
import sys

import helpers
from sgan_jax import tensorflow_cpu

# Fails the import of TensorFlow (or of tfds or clu, which start it) while
# sgan_jax.tensorflow_cpu, which hides the GPU from TF, has not run yet. Then
# imports each CLI in turn; the flags one defines are removed before the
# next, which defines some of the same names.
_SCRIPT = """
import importlib
import sys

from absl import flags


class Watch:

  def find_spec(self, name, path=None, target=None):
    if (name.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'clu')
        and 'sgan_jax.tensorflow_cpu' not in sys.modules):
      raise ImportError(f'{name} imported before sgan_jax.tensorflow_cpu')
    return None


sys.meta_path.insert(0, Watch())
for name in ('main', 'sample', 'evaluate', 'ablate', 'convert_inception'):
  defined = set(flags.FLAGS)
  importlib.import_module(f'sgan_jax.{name}')
  for flag in set(flags.FLAGS) - defined:
    delattr(flags.FLAGS, flag)
print('tensorflow' in sys.modules)
"""


def test_every_entry_point_imports_tensorflow_through_it():
  res = subprocess.run([sys.executable, '-c', _SCRIPT], cwd=helpers.REPO,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  # The data sources did import TF, so the watch above was exercised.
  assert res.stdout.strip().splitlines()[-1] == 'True'


def test_tensorflow_sees_no_gpu():
  assert not tensorflow_cpu.tf.config.get_visible_devices('GPU')


def test_summary_writer_writes_event_files(tmp_path):
  writer = tensorflow_cpu.summary_writer(str(tmp_path))
  writer.write_scalars(1, {'loss': 0.5})
  writer.close()
  assert any(f.startswith('events.out.tfevents')
             for f in os.listdir(tmp_path))
