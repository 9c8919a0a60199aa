"""The FID InceptionV3: weight loading, batching, and equality with
pytorch-fid's own network on the same (random) weights."""

import os
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest

import helpers
from sgan_jax import convert_inception
from sgan_jax import inception

# Small inputs keep compiles cheap; 75 is the smallest side the stride-2
# stages leave at least 1 x 1 for.
_SMALL = 75


@pytest.fixture(scope='module')
def state_dict():
  return helpers.random_inception_state_dict()


def _images(seed, shape):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def test_expected_shapes_are_the_torchvision_names():
  shapes = inception.expected_shapes()
  # 94 BasicConv2d (conv + 4 BN arrays) and the fc layer.
  assert len(shapes) == 94 * 5 + 2
  assert shapes['Conv2d_1a_3x3.conv.weight'] == (32, 3, 3, 3)
  assert shapes['Mixed_6b.branch7x7_2.conv.weight'] == (128, 128, 1, 7)
  assert shapes['Mixed_7c.branch_pool.bn.running_var'] == (192,)
  assert shapes['fc.weight'] == (inception.NUM_CLASSES,
                                 inception.POOL_FEATURES)


def test_features_and_probs_shapes(state_dict):
  variables = inception.variables_from_state_dict(state_dict)
  pool, probs = jax.jit(inception.features_and_probs, static_argnums=2)(
      variables, _images(0, (3, 28, 28, 1)), _SMALL)
  assert pool.shape == (3, inception.POOL_FEATURES)
  assert probs.shape == (3, inception.NUM_CLASSES)
  np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.asarray(pool) >= 0)  # mean of ReLU outputs


def test_feature_fn_pads_the_last_batch_without_changing_results(state_dict):
  variables = inception.variables_from_state_dict(state_dict)
  images = _images(1, (3, 28, 28, 1))
  pool2, probs2 = inception.make_feature_fn(variables, 2, _SMALL)(images)
  pool3, probs3 = inception.make_feature_fn(variables, 3, _SMALL)(images)
  assert pool2.shape == (3, inception.POOL_FEATURES)
  np.testing.assert_allclose(pool2, pool3, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(probs2, probs3, rtol=1e-4, atol=1e-7)
  with pytest.raises(ValueError, match='batch_size'):
    inception.make_feature_fn(variables, 0)


def test_bad_state_dicts_name_what_is_wrong(state_dict):
  missing = dict(state_dict)
  del missing['Mixed_5b.branch1x1.conv.weight']
  with pytest.raises(ValueError, match='1 missing .*Mixed_5b.branch1x1'):
    inception.variables_from_state_dict(missing)
  wrong = dict(state_dict, **{'fc.weight': np.zeros((1000, 2048))})
  with pytest.raises(ValueError, match='wrong shape .*fc.weight'):
    inception.variables_from_state_dict(wrong)
  extra = dict(state_dict, **{'AuxLogits.fc.weight': np.zeros((3, 3))})
  with pytest.raises(ValueError, match='unexpected .*AuxLogits'):
    inception.variables_from_state_dict(extra)
  # torch's BN counters are not weights.
  counted = dict(state_dict, **{'Conv2d_1a_3x3.bn.num_batches_tracked':
                                np.array(5)})
  inception.variables_from_state_dict(counted)
  with pytest.raises(ValueError, match='1 or 3'):
    inception.preprocess(np.zeros((2, 28, 28), np.uint8))


def test_load_variables_from_npz(state_dict, tmp_path):
  path = str(tmp_path / 'inception.npz')
  np.savez(path, **state_dict)
  variables = inception.load_variables(path)
  np.testing.assert_array_equal(
      variables['params']['Mixed_5b']['branch5x5_2']['conv']['kernel'],
      state_dict['Mixed_5b.branch5x5_2.conv.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables['batch_stats']['Conv2d_1a_3x3']['bn']['var'],
      state_dict['Conv2d_1a_3x3.bn.running_var'])
  with pytest.raises(FileNotFoundError, match='not found'):
    inception.load_variables(str(tmp_path / 'nope.npz'))
  bad = tmp_path / 'bad.npz'
  bad.write_text('not a zip')
  with pytest.raises(ValueError, match='not a readable'):
    inception.load_variables(str(bad))
  other = str(tmp_path / 'other.npz')
  np.savez(other, w=np.zeros(3))
  with pytest.raises(ValueError, match='convert_inception'):
    inception.load_variables(other)


def test_convert_cli_without_a_file_is_one_line_error(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'sgan_jax.convert_inception',
       f'--pth={tmp_path}/missing.pth', f'--out={tmp_path}/o.npz'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith('error: --pth')


# ---------------------------------------------------------------------------
# Against pytorch-fid (pip install -e '.[inception_check]').
# ---------------------------------------------------------------------------


def _import_pytorch_fid():
  torch = pytest.importorskip('torch')
  try:
    # The PyPI torchvision wheel is a CUDA build whose C ops do not load with
    # the CPU torch; declaring the two ops its import registers fakes for
    # lets the pure-Python model code (all pytorch-fid uses) import.
    lib = torch.library.Library('torchvision', 'DEF')
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> '
               'Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> '
               'Tensor')
    _import_pytorch_fid.lib = lib  # the definitions live as long as this
  except RuntimeError:
    pass  # already defined (a real torchvision, or a second call)
  pfi = pytest.importorskip('pytorch_fid.inception')
  return torch, pfi


@pytest.fixture(scope='module')
def torch_fid(state_dict):
  """pytorch-fid's FID InceptionV3 and its bare network, on `state_dict`."""
  torch, pfi = _import_pytorch_fid()
  tensors = {k: torch.from_numpy(v) for k, v in state_dict.items()}
  # pytorch-fid loads its weights from a URL; hand it ours instead.
  with mock.patch.object(pfi, 'load_state_dict_from_url',
                         lambda *args, **kwargs: tensors):
    wrapper = pfi.InceptionV3([pfi.InceptionV3.DEFAULT_BLOCK_INDEX]).eval()
    net = pfi.fid_inception_v3().eval()
  return torch, wrapper, net


@pytest.mark.parametrize('shape', [(4, 28, 28, 1), (3, 32, 32, 3),
                                   (2, 320, 310, 3)])
def test_matches_pytorch_fid(torch_fid, state_dict, shape):
  torch, wrapper, net = torch_fid
  images = _images(2, shape)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
  if shape[-1] == 1:
    x = x.repeat(1, 3, 1, 1)
  with torch.no_grad():
    pool_ref = wrapper(x)[0].flatten(1)
    logits_ref = net.fc(pool_ref).numpy()
    pool_ref = pool_ref.numpy()
  unbiased = pool_ref @ state_dict['fc.weight'].T
  probs_ref = np.exp(unbiased - unbiased.max(-1, keepdims=True))
  probs_ref /= probs_ref.sum(-1, keepdims=True)

  variables = inception.variables_from_state_dict(state_dict)
  pool, probs = inception.make_feature_fn(variables, batch_size=4)(images)
  _, logits = jax.jit(inception.InceptionV3().apply)(
      variables, inception.preprocess(images))
  scale = np.abs(pool_ref).max()
  assert scale > 0.1  # the random network did not collapse to zeros
  np.testing.assert_allclose(pool, pool_ref, atol=1e-4 * scale)
  np.testing.assert_allclose(np.asarray(logits), logits_ref,
                             atol=1e-4 * np.abs(logits_ref).max())
  np.testing.assert_allclose(probs, probs_ref, rtol=1e-3)


def test_convert_round_trip(torch_fid, state_dict, tmp_path):
  torch, _, net = torch_fid
  pth, out = str(tmp_path / 'w.pth'), str(tmp_path / 'w.npz')
  # A real module's state dict: num_batches_tracked included, as in the file.
  torch.save(net.state_dict(), pth)
  assert convert_inception.convert(pth, out) == len(state_dict)
  with np.load(out) as f:
    for name, array in state_dict.items():
      np.testing.assert_array_equal(f[name], array)
  torch.save({'fc.weight': torch.zeros(3)}, pth)
  with pytest.raises(ValueError, match='not the FID InceptionV3'):
    convert_inception.convert(pth, out)
