"""The Table-1 ablation runner: variant configs, the table, the CLI."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import helpers
from sgan_jax import ablate
from sgan_jax import architectures


def _base():
  config = helpers.load_config('mnist')
  config.schedule.stack_steps = (5, 3)
  config.schedule.joint_steps = 2
  config.lock()
  return config


def _pixel_steps(c):
  return c.schedule.stack_steps[0] + c.schedule.joint_steps


@pytest.mark.parametrize('name', list(ablate.VARIANTS))
def test_every_variant_has_the_same_pixel_level_budget(name):
  base = _base()
  c = ablate.variant_config(base, name, seed=3)
  assert c.seed == 3 and _pixel_steps(c) == _pixel_steps(base)
  models = architectures.build_models(c, 10, (28, 28, 1))
  single = name.startswith('gan_')
  assert models.num_stacks == (1 if single else 2)
  assert c.schedule.joint_steps == (2 if name == 'sgan' else 0)
  assert c.loss.cond_weight == (0.0 if name in ('gan_adv_ent', 'gan_adv')
                                else base.loss.cond_weight)
  assert c.loss.ent_weight == (0.0 if name in ('gan_adv_cond', 'gan_adv')
                               else base.loss.ent_weight)
  if single:
    # Stack 0's networks, conditioned on the one-hot label.
    assert models.stacks[0].cond_level == 'logits'
  # The base config is not modified.
  assert base.seed == 0 and len(base.stacks) == 2


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match='unknown variant'):
    ablate.variant_config(_base(), 'dcgan', 0)


def test_table_has_mean_and_std_over_seeds_and_a_real_row():
  run = {'cond_acc': 0.9, 'e_is': 8.0, 'e_fid': 3.0, 'diversity_ratio': 0.9,
         'diversity_ratio_pixel': 0.8, 'real_cond_acc': 0.99,
         'real_e_is': 9.5, 'real_e_fid': 0.5}
  other = dict(run, cond_acc=0.7)
  table = ablate.markdown_table({'sgan': [run, other], 'gan_adv': [run]})
  lines = table.splitlines()
  # No judge in these runs: its columns are '-'.
  assert lines[2].startswith('| SGAN | 2 | 0.800 ± 0.141 | - | 8.000 ± 0.000')
  assert lines[3].startswith('| GAN (L_adv) | 1 | 0.900 | - | 8.000 |')
  assert lines[4].startswith('| real data') and '0.990' in lines[4]


def test_table_shows_the_judge_columns_when_runs_have_them():
  run = {'cond_acc': 0.9, 'judge_cond_acc': 0.85, 'e_is': 8.0, 'e_fid': 3.0,
         'judge_fid': 4.0, 'diversity_ratio': 0.9,
         'diversity_ratio_judge': 0.7, 'diversity_ratio_pixel': 0.8,
         'real_cond_acc': 0.99, 'real_judge_cond_acc': 0.98,
         'real_e_is': 9.5, 'real_e_fid': 0.5, 'real_judge_fid': 0.25}
  lines = ablate.markdown_table({'sgan': [run]}).splitlines()
  assert lines[2] == ('| SGAN | 1 | 0.900 | 0.850 | 8.000 | 3.000 | 4.000 | '
                      '0.900 | 0.700 | 0.800 |')
  assert lines[3].endswith('| | 0.990 | 0.980 | 9.500 | 0.500 | 0.250 | '
                           '1.000 | 1.000 | 1.000 |')


def test_a_run_stopped_early_stops_the_ablation_unevaluated(tmp_path,
                                                            monkeypatch):
  base = helpers.load_config('mnist')
  evaluated = []
  monkeypatch.setattr(ablate.train, 'train_and_evaluate',
                      lambda config, workdir: types.SimpleNamespace(step=4))
  monkeypatch.setattr(ablate.evaluation, 'evaluate_workdir',
                      lambda *a: evaluated.append(a))
  os.makedirs(tmp_path / 'sgan' / 'seed0')   # train_and_evaluate's, mocked
  with pytest.raises(ablate.StoppedEarly, match='stopped at step 4 of 9'):
    ablate.run_variant(base, 'sgan', 0, str(tmp_path), 20)
  assert not evaluated


def test_report_json_writes_nan_as_null(tmp_path):
  run = {'cond_acc': 0.9, 'e_is': 8.0, 'e_fid': 3.0,
         'diversity_ratio': float('nan'), 'diversity_ratio_pixel': 0.8,
         'real_cond_acc': 0.99, 'real_e_is': 9.5, 'real_e_fid': 0.5,
         'train_s': 60.0}
  ablate.write_report(str(tmp_path), {'sgan': [run]}, 'cmd')
  text = (tmp_path / 'ablation.json').read_text()
  assert 'NaN' not in text
  assert json.loads(text)['sgan'][0]['diversity_ratio'] is None


def test_num_not_a_multiple_of_the_classes_fails_before_training(tmp_path):
  res = subprocess.run(
      [sys.executable, '-m', 'sgan_jax.ablate',
       '--config=configs/mnist.py:tiny', f'--workdir={tmp_path / "abl"}',
       '--num=25'], cwd=helpers.REPO, capture_output=True, text=True,
      timeout=300, check=False)
  assert res.returncode != 0
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith('error:') and '--num' in last and '25' in last
  assert not (tmp_path / 'abl' / 'sgan').exists()


def _npz_data(path):
  """A tiny MNIST-shaped dataset as prepared arrays (no TensorFlow)."""
  r = np.random.default_rng(0)
  os.makedirs(path)
  for split, n in (('train', 120), ('test', 40)):
    np.savez(os.path.join(path, f'{split}.npz'),
             image=r.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
             label=(np.arange(n) % 10).astype(np.int32))


def test_ablate_cli_trains_evaluates_and_tabulates(tmp_path):
  data, root = str(tmp_path / 'data'), str(tmp_path / 'abl')
  _npz_data(data)
  args = [sys.executable, '-m', 'sgan_jax.ablate',
          '--config=configs/mnist.py:tiny', f'--workdir={root}',
          '--variants=sgan_no_joint,gan_adv', '--seeds=0', '--num=20',
          f'--config.data.manual_dir={data}', '--config.model.conv_impl=xla']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  res = subprocess.run(args, cwd=helpers.REPO, env=env, capture_output=True,
                       text=True, timeout=900, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  table = open(os.path.join(root, 'ablation.md')).read()
  assert '| SGAN-no-joint | 1 |' in table and '| GAN (L_adv) | 1 |' in table
  for name in ('sgan_no_joint', 'gan_adv'):
    assert os.path.exists(os.path.join(root, name, 'seed0', 'eval',
                                       'metrics.json'))
  # A rerun finds every run finished: it only re-evaluates, and keeps the
  # training times of the first call.
  def train_seconds():
    with open(os.path.join(root, 'ablation.json')) as f:
      return {k: [r['train_s'] for r in runs]
              for k, runs in json.load(f).items()}
  first = train_seconds()
  assert all(t > 0 for runs in first.values() for t in runs)
  again = subprocess.run(args, cwd=helpers.REPO, env=env, capture_output=True,
                         text=True, timeout=900, check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'step 1/' not in again.stderr
  assert train_seconds() == first

  bad_args = [a for a in args if not a.startswith('--variants')]
  bad = subprocess.run(bad_args + ['--variants=dcgan'], cwd=helpers.REPO,
                       env=env, capture_output=True, text=True, timeout=300,
                       check=False)
  assert bad.returncode != 0
  assert 'unknown variant' in bad.stderr.strip().splitlines()[-1]
