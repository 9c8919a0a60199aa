"""Evaluation: the evaluator on a tiny trained run, the evaluate CLI."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import helpers
from sgan_jax import architectures
from sgan_jax import evaluation
from sgan_jax import inception
from sgan_jax import rng
from sgan_jax import sharding
from sgan_jax import train


# --- A tiny trained run ------------------------------------------------------


def _write_arrays(directory, n=64):
  """Prepared train/test arrays in `directory` (read with no TF at all, so a
  CLI subprocess sees the same data as the test process)."""
  r = np.random.default_rng(0)
  for split in ('train', 'test'):
    np.savez(os.path.join(directory, f'{split}.npz'),
             image=r.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
             label=(np.arange(n) % 10).astype(np.int32))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, config, final state) of a tiny MNIST run.

  Only the encoder phase runs: the G_i keep their initial params, which the
  evaluation treats exactly like trained ones, and the stack and joint steps
  would triple the compile time of this module.
  """
  root = tmp_path_factory.mktemp('eval')
  data = root / 'data'
  data.mkdir()
  _write_arrays(str(data))
  config = helpers.load_config('mnist')
  config.data.max_examples = 64
  config.data.manual_dir = str(data)
  config.schedule.stack_steps = (0, 0)
  config.schedule.joint_steps = 0
  workdir = str(root / 'w')
  st = train.train_and_evaluate(config, workdir)
  return workdir, config, st


def _evaluator(config, **kw):
  models = architectures.build_models(config, 10, (28, 28, 1))
  return evaluation.make_evaluator(models, config, sharding.make_mesh(),
                                   num=40, batch_size=16, **kw)


def test_evaluator_caches_real_statistics_and_is_deterministic(run):
  _, config, st = run
  calls = []

  def fake_inception(images):
    # A stand-in network: pixel means as features, a fixed softmax.
    calls.append(len(images))
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    feats = np.stack([x.mean(1), x.std(1)], axis=1)
    logits = np.stack([x[:, :10].sum(1), x[:, 10:20].sum(1)], axis=1)
    return feats, jax.nn.softmax(logits, axis=-1)

  evaluator = _evaluator(config, inception_fn=fake_inception)
  key = rng.eval_key(jax.random.key(0))
  first = evaluator(st, key)
  real_calls = len(calls)
  second = evaluator(st, key)
  # The real-data references were computed once, not per call.
  assert sum(calls[real_calls:]) == 40
  assert first == second
  other = evaluator(st, jax.random.fold_in(key, 1))
  assert other['diversity_pixel'] != first['diversity_pixel']
  assert {k: v for k, v in other.items() if k.startswith('real_')} == {
      k: v for k, v in first.items() if k.startswith('real_')}

  expected = {'cond_acc', 'e_is', 'e_is_std', 'e_fid', 'diversity_fc3',
              'diversity_pixel', 'diversity_ratio', 'diversity_ratio_pixel',
              'real_cond_acc', 'real_e_is', 'real_e_is_std', 'real_e_fid',
              'real_diversity_fc3', 'real_diversity_pixel',
              'inception_is', 'inception_is_std', 'inception_fid',
              'real_inception_is', 'real_inception_is_std',
              'real_inception_fid'}
  assert set(first) == expected
  assert all(isinstance(v, float) for v in first.values())
  for k in ('cond_acc', 'real_cond_acc'):
    assert 0.0 <= first[k] <= 1.0
  for k in ('e_is', 'real_e_is', 'inception_is'):
    assert 1.0 - 1e-9 <= first[k] <= 10.0 + 1e-9
  assert first['e_fid'] >= 0.0 and first['real_e_fid'] >= 0.0
  # Uniform random test images in [0, 1]: per-pixel distance ~ sqrt(1/6).
  assert first['real_diversity_pixel'] == pytest.approx(
      np.sqrt(28 * 28 / 6), rel=0.05)
  assert first['diversity_ratio'] == pytest.approx(
      first['diversity_fc3'] / first['real_diversity_fc3'])


def test_evaluator_scores_in_the_judge_feature_space(run):
  _, config, st = run

  def pixel_judge(images):
    # Pixels in [0, 1] as the judge's features: its diversity must equal
    # the pixel diversity, sample and real alike. Always predicts class 0.
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return x, np.eye(10)[np.zeros(len(images), int)]

  out = _evaluator(config, judge_fn=pixel_judge)(
      st, rng.eval_key(jax.random.key(0)))
  assert out['diversity_judge'] == pytest.approx(out['diversity_pixel'])
  assert out['real_diversity_judge'] == pytest.approx(
      out['real_diversity_pixel'])
  assert out['diversity_ratio_judge'] == pytest.approx(
      out['diversity_ratio_pixel'])
  # A judge that always says 0: right on the 1/10 of balanced samples, and
  # on the 7 zeros among the 64 test images (labels arange(64) % 10).
  assert out['judge_cond_acc'] == pytest.approx(0.1)
  assert out['real_judge_cond_acc'] == pytest.approx(7 / 64)
  assert out['judge_fid'] >= 0.0 and out['real_judge_fid'] >= 0.0


def test_evaluator_rejects_unbalanced_num():
  config = helpers.load_config('mnist')
  models = architectures.build_models(config, 10, (28, 28, 1))
  for num in (0, 15):
    with pytest.raises(ValueError, match='multiple of'):
      evaluation.make_evaluator(models, config, sharding.make_mesh(), num=num)


def test_evaluate_workdir_fails_fast_on_bad_input(run, tmp_path):
  workdir, _, _ = run
  with pytest.raises(FileNotFoundError, match='config.json'):
    evaluation.evaluate_workdir(str(tmp_path / 'missing'), 100)
  with pytest.raises(ValueError, match='multiple of'):
    evaluation.evaluate_workdir(workdir, 0)
  with pytest.raises(FileNotFoundError, match='not found'):
    evaluation.evaluate_workdir(workdir, 100,
                                inception_weights=str(tmp_path / 'x.npz'))
  weights = str(tmp_path / 'inception.npz')
  np.savez(weights, w=np.zeros(3))
  with pytest.raises(ValueError, match='InceptionV3 state dict'):
    evaluation.evaluate_workdir(workdir, 100, inception_weights=weights)
  assert not os.path.exists(os.path.join(workdir, 'eval'))


def test_evaluate_workdir_with_inception_weights(run, tmp_path, monkeypatch):
  workdir, _, _ = run
  weights = str(tmp_path / 'inception.npz')
  np.savez(weights, **helpers.random_inception_state_dict())
  # The network at its smallest input: the scores' plumbing is under test
  # here (inception_test checks the network itself at 299).
  monkeypatch.setattr(inception, 'IMAGE_SIZE', 75)
  _, m, notes = evaluation.evaluate_workdir(workdir, 100,
                                            inception_weights=weights,
                                            write=False)
  for k in ('inception_is', 'inception_fid', 'real_inception_is',
            'real_inception_fid'):
    assert np.isfinite(m[k]), k
  assert 1.0 <= m['inception_is'] <= inception.NUM_CLASSES
  assert m['inception_fid'] >= 0.0 and m['real_inception_fid'] >= 0.0
  assert not any(n.startswith('Inception IS/FID not computed') for n in notes)


def _cli(*args):
  return subprocess.Popen(
      [sys.executable, '-m', 'sgan_jax.evaluate', *args], cwd=helpers.REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu'),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_evaluate_cli(run):
  workdir, _, st = run
  # Started together: the failing one costs only imports. (The other bad
  # inputs take the same path; test_evaluate_workdir_fails_fast_on_bad_input
  # covers their messages.)
  procs = {'ok': _cli(f'--workdir={workdir}', '--num=100'),
           'num': _cli(f'--workdir={workdir}', '--num=15')}
  res = {k: (p.wait(timeout=600), *p.communicate()) for k, p in procs.items()}

  rc, out, err = res['ok']
  assert rc == 0, err[-3000:]
  assert 'e_fid' in out and 'diversity_ratio' in out
  assert 'Inception IS/FID not computed' in out
  with open(os.path.join(workdir, 'eval', 'metrics.json')) as f:
    record = json.load(f)
  assert record['step'] == int(st.step)
  m = record['metrics']
  for k in ('cond_acc', 'e_is', 'e_fid', 'diversity_ratio', 'real_cond_acc',
            'real_e_is', 'real_e_fid', 'real_diversity_fc3',
            'judge_cond_acc', 'real_judge_cond_acc', 'judge_fid',
            'real_judge_fid', 'diversity_ratio_judge',
            'real_diversity_judge'):
    assert k in m
  # The tiny preset's independent classifier was trained and cached.
  assert 'judge_cond_acc' in out
  assert os.path.exists(os.path.join(workdir, 'eval', 'judge_params.msgpack'))
  assert not any(k.startswith('inception') for k in m)
  assert any(n.startswith('Inception IS/FID not computed')
             for n in record['notes'])
  assert any(f.startswith('events.out.tfevents')
             for f in os.listdir(os.path.join(workdir, 'eval')))

  rc, _, err = res['num']
  assert rc != 0
  last = err.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'multiple of' in last, err[-2000:]
