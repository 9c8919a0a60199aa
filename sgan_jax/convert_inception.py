"""Converts pytorch-fid's InceptionV3 weights to the `.npz` sgan_jax reads.

  python -m sgan_jax.convert_inception \
      --pth=pt_inception-2015-12-05-6726825d.pth --out=inception_fid.npz

The `.pth` is pytorch-fid's port of the TF `inception-2015-12-05` graph that
published IS/FID numbers use (download it from pytorch-fid's releases where
there is network access). Needs torch only here (`pip install -e
'.[inception_check]'`); evaluation itself reads the `.npz` without torch. The
file is checked against `sgan_jax.inception.InceptionV3` before it is
written, so a wrong file fails here, not at evaluation time.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from sgan_jax import atomic_file
from sgan_jax import cli
from sgan_jax import inception

_PTH = flags.DEFINE_string('pth', None, "pytorch-fid's state dict (.pth).")
_OUT = flags.DEFINE_string('out', None, 'The .npz to write.')
flags.mark_flags_as_required(['pth', 'out'])


def state_dict_arrays(state_dict) -> dict[str, np.ndarray]:
  """A torch state dict -> float32 numpy arrays under the same names."""
  return {k: v.detach().cpu().numpy().astype(np.float32)
          for k, v in state_dict.items()
          if not k.endswith('num_batches_tracked')}


def convert(pth: str, out: str) -> int:
  """Reads `pth`, checks it against the network, writes `out`.

  Args:
    pth: the torch state dict file.
    out: the .npz path.

  Returns:
    The number of arrays written.

  Raises:
    FileNotFoundError: no `pth`.
    ValueError: not the FID InceptionV3 state dict.
    NotImplementedError: torch is not installed.
  """
  if not os.path.isfile(pth):
    raise FileNotFoundError(f'--pth: {pth} not found')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise NotImplementedError(
        "reading a .pth needs torch: pip install -e '.[inception_check]'"
    ) from e
  state_dict = torch.load(pth, map_location='cpu', weights_only=True)
  if not isinstance(state_dict, dict):
    raise ValueError(f'--pth: {pth} holds a {type(state_dict).__name__}, '
                     'not a state dict')
  arrays = state_dict_arrays(state_dict)
  inception.variables_from_state_dict(arrays)  # raises on a wrong file
  with atomic_file.open_for_write(out, binary=True) as f:
    np.savez(f, **arrays)
  return len(arrays)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    count = convert(_PTH.value, _OUT.value)
  except cli.USER_ERRORS as e:
    cli.exit_with(e)
  print(f'wrote {count} arrays to {_OUT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
