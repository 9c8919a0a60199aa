"""Reading a training run back from its workdir: config and latest state.

Shared by the sampling and evaluation CLIs (and anything else that opens a
run after the fact), so none of them imports another CLI's flags.
"""

import json

from etils import epath
import jax
import ml_collections
import numpy as np

from sgan_jax import architectures
from sgan_jax import checkpointing
from sgan_jax import config_base
from sgan_jax import datasets
from sgan_jax import models as models_lib
from sgan_jax import sharding
from sgan_jax import state as state_lib


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: is {workdir} the --workdir '
                            'of a training run?')
  raw = config_base.with_added_keys(json.loads(path.read_text()))
  # JSON turns the list of per-stack ConfigDicts into plain dicts.
  raw['stacks'] = [ml_collections.ConfigDict(s) for s in raw['stacks']]
  return ml_collections.ConfigDict(raw)


def restore_latest(workdir: str) -> tuple[models_lib.Models,
                                          state_lib.SGANState,
                                          jax.sharding.Mesh,
                                          ml_collections.ConfigDict]:
  """(models, state, mesh, config) of a run's latest readable checkpoint."""
  config = load_config(workdir)
  num_classes, image_shape = datasets.dataset_info(config.data.name)
  models = architectures.build_models(config, num_classes, image_shape)
  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.log.keep)
  try:
    abstract = jax.eval_shape(
        lambda k: state_lib.create_state(
            models, config, k, np.zeros(image_shape, np.float32)),
        jax.random.key(0))
    restored = ckpt.restore_latest_good(
        checkpointing.abstract_like(abstract, repl), move_aside=False)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f'no checkpoint in {ckpt.directory}')
  return models, restored[0], mesh, config
