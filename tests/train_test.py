"""End-to-end: the tiny schedule on mock data, resume equality, CLIs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import helpers
from sgan_jax import datasets
from sgan_jax import input_pipeline
from sgan_jax import resume_checks
from sgan_jax import train


def _tiny(name='mnist'):
  config = helpers.load_config(name)
  config.data.max_examples = 64
  return config


def test_tiny_run_writes_everything_and_resumes_bit_exactly(tmp_path):
  config = _tiny()
  with tfds.testing.mock_data(num_examples=64):
    full = train.train_and_evaluate(config, str(tmp_path / 'full'))
    # Interrupted after step 5 (inside the stack0 phase), then resumed by a
    # fresh call, as a restarted process would.
    part = train.train_and_evaluate(config, str(tmp_path / 'resumed'),
                                    stop_after=5)
    assert int(part.step) == 5
    resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  total = 3 + 2 + 2 + 2
  assert int(full.step) == int(resumed.step) == total
  assert helpers.tree_equal(jax.device_get(full), jax.device_get(resumed))

  workdir = tmp_path / 'full'
  steps = sorted(int(p) for p in os.listdir(workdir / 'checkpoints')
                 if p.isdigit())
  assert steps[-1] == total
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))
  grids = sorted(os.listdir(workdir / 'samples'))
  assert grids and all(g.endswith('.png') for g in grids)
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['data']['name'] == 'mnist'


def test_workdir_of_another_config_is_refused(tmp_path):
  config = _tiny()
  with tfds.testing.mock_data(num_examples=64):
    train.train_and_evaluate(config, str(tmp_path), stop_after=1)
  other = _tiny()
  other.stacks[0].z_dim = 7
  # Mock data here too: the data loads before the workdir check, and a
  # machine without a tfds cache must not try the network.
  with tfds.testing.mock_data(num_examples=64), \
      pytest.raises(resume_checks.ConfigMismatchError, match='stacks'):
    train.train_and_evaluate(other, str(tmp_path))


def test_model_config_errors_come_before_the_data(tmp_path):
  config = _tiny()
  config.stacks[0].z_dim = 0
  # A data folder that does not exist: had the data been read first, this
  # would be the error (or, without manual_dir, a download).
  config.data.manual_dir = str(tmp_path / 'absent')
  with pytest.raises(ValueError, match='z_dim must be positive'):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('key,value,message', [
    ('log.ckpt_every', 0, 'log.ckpt_every must be >= 1'),
    ('log.log_every', 0, 'log.log_every must be >= 1'),
    ('log.eval_every', -1, 'log.eval_every must be >= 0'),
    ('log.eval_num', 25, 'eval_num must be a positive multiple of the 10'),
    ('data.batch_size', 0, 'batch_size must be positive'),
    ('data.batch_size', 128, 'exceeds the dataset size 64'),
])
def test_run_config_errors_come_before_the_workdir(tmp_path, key, value,
                                                   message):
  config = _tiny()
  config.log.eval_every = 5
  group, name = key.split('.')
  config[group][name] = value
  with tfds.testing.mock_data(num_examples=64), \
      pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_a_missing_test_split_is_found_before_the_encoder_trains(tmp_path):
  config = _tiny()
  data = tmp_path / 'npz'
  data.mkdir()
  r = np.random.default_rng(0)
  np.savez(data / 'train.npz',
           image=r.integers(0, 256, (64, 28, 28, 1), np.uint8),
           label=(np.arange(64) % 10).astype(np.int32))
  config.data.manual_dir = str(data)   # no test.npz beside it
  with pytest.raises(datasets.DataError, match='no test.npz'):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  # Refused before anything is written: not even checkpoints/.
  assert not (tmp_path / 'w').exists()


def test_more_steps_on_resume_are_allowed_and_evaluation_runs(
    tmp_path, caplog, monkeypatch):
  config = _tiny()
  config.schedule.joint_steps = 0
  config.log.eval_every = 2
  config.log.eval_num = 20
  loads = []
  load_split = input_pipeline.load_split

  def counting_load_split(data_config, split):
    loads.append(split)
    return load_split(data_config, split)

  monkeypatch.setattr(input_pipeline, 'load_split', counting_load_split)
  with tfds.testing.mock_data(num_examples=64):
    train.train_and_evaluate(config, str(tmp_path), stop_after=3)
    # E's accuracy and the evaluator share one load of the test split.
    assert loads == ['train', 'test']
    config.schedule.joint_steps = 1
    with caplog.at_level('INFO'):
      st = train.train_and_evaluate(config, str(tmp_path))
  assert loads[2:] == ['train', 'test']   # E is done: the evaluator's load
  assert int(st.step) == 3 + 2 + 2 + 1
  evals = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith('eval at step')]
  assert [m.split(':')[0] for m in evals] == [
      'eval at step 4', 'eval at step 6', 'eval at step 8']


def _cli(*args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', *args], cwd=helpers.REPO,
                        env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def test_main_and_sample_cli_on_real_mnist(tmp_path, mnist_tfds_dir):
  workdir = str(tmp_path / 'w')
  args = ['sgan_jax.main', '--config=configs/mnist.py:tiny',
          f'--workdir={workdir}', f'--config.data.data_dir={mnist_tfds_dir}',
          f'--config.data.manual_dir={helpers.MNIST_DIR}']
  first = _cli(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'encoder test accuracy' in first.stderr
  again = _cli(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'resuming from' in again.stderr
  assert 'step 1/' not in again.stderr   # nothing was trained twice

  out, grid = str(tmp_path / 's.npz'), str(tmp_path / 'g.png')
  res = _cli('sgan_jax.sample', f'--workdir={workdir}', '--num=1000',
             f'--out={out}', f'--grid={grid}')
  assert res.returncode == 0, res.stderr[-3000:]
  with np.load(out) as f:
    images, labels = f['images'], f['labels']
  assert images.dtype == np.uint8 and images.shape == (1000, 28, 28, 1)
  assert labels.dtype == np.int32 and labels.shape == (1000,)
  np.testing.assert_array_equal(np.bincount(labels), np.full(10, 100))
  assert os.path.getsize(grid) > 0

  bad = _cli('sgan_jax.sample', f'--workdir={workdir}', '--num=15',
             f'--out={out}')
  assert bad.returncode != 0
  assert 'multiple of' in bad.stderr.strip().splitlines()[-1]

  # The paper figures: fixed ĥ_1 rows, z_1 interpolation, nearest neighbours;
  # the class grid takes --columns too, whatever --num gives --out.
  figs = {f: str(tmp_path / f'{f}.png') for f in
          ('grid', 'fixed_h1_grid', 'interpolation_grid', 'neighbours_grid')}
  res = _cli('sgan_jax.sample', f'--workdir={workdir}', '--columns=4',
             '--neighbours=3', '--num=20', f'--out={out}',
             *(f'--{f}={p}' for f, p in figs.items()))
  assert res.returncode == 0, res.stderr[-3000:]
  for f, p in figs.items():
    with Image.open(p) as im:
      width, height = im.size
    # 10 rows of 28-pixel tiles (1-pixel gaps); 4 columns, or 1 + 3 + 3
    # images and 2 separators for the neighbours.
    assert height == 10 * 29 + 1, f
    assert width == (9 if f == 'neighbours_grid' else 4) * 29 + 1, f
  nothing = _cli('sgan_jax.sample', f'--workdir={workdir}')
  assert nothing.returncode != 0
  assert 'nothing to write' in nothing.stderr.strip().splitlines()[-1]


def test_svhn_three_stacks_run_end_to_end_on_mock_data(tmp_path):
  """Three stacks (label -> fc3 -> pool2 -> image) from the CLI's preset."""
  config = helpers.load_config('svhn', 'tiny,three_stacks')
  config.data.max_examples = 64
  with tfds.testing.mock_data(num_examples=64):
    st = train.train_and_evaluate(config, str(tmp_path))
  assert len(st.stacks) == 3
  assert int(st.step) == 3 + 2 + 2 + 2 + 2
  assert os.listdir(tmp_path / 'samples')


@pytest.mark.skipif(not os.path.isdir(helpers.CIFAR10_DIR),
                    reason='shared/data/cifar10 not beside the checkout')
def test_cifar10_tiny_runs_from_the_jpeg_tars(tmp_path):
  config = helpers.load_config('cifar10')
  config.data.manual_dir = helpers.CIFAR10_DIR
  config.data.data_dir = str(tmp_path / 'cache')
  st = train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert int(st.step) == 3 + 2 + 2 + 2
  # The image range of the original CIFAR code: minus the per-pixel mean.
  offset = np.asarray(st.pixel_offset)
  assert offset.shape == (32, 32, 3) and -0.7 < offset.mean() < -0.3
