"""An independent classifier that judges samples (`judge_cond_acc`).

The generators are trained to make the run's own encoder E output their
conditioning class (the conditional loss), so E's accuracy on samples can be
high for images that only fool E. The judge is a second classifier of the
same family, trained from its own seed on the same training split, that no
generator ever saw: its accuracy on samples is the fairer conditional
accuracy. It is trained on first use and cached in `<workdir>/eval/`.
"""

import json

from absl import logging
from etils import epath
import flax.serialization
import jax
import ml_collections
import numpy as np

from sgan_jax import architectures
from sgan_jax import atomic_file
from sgan_jax import batching
from sgan_jax import datasets
from sgan_jax import evaluation
from sgan_jax import sharding
from sgan_jax import state as state_lib
from sgan_jax import steps

JUDGE_FILE = 'judge_params.msgpack'
# Beside it: what the cached judge was trained with (`Judge.recipe`).
RECIPE_FILE = 'judge_params.json'
# Far from any run's seed, so the judge never starts from E's initialisation.
_SEED_OFFSET = 7919


class Judge:
  """`judge(images) -> (fc3 features, class probabilities)` of uint8 images.

  The same contract as an Inception `FeatureFn` of `sgan_jax.evaluation`, so
  the evaluator computes conditional accuracy, FID and intra-class diversity
  in the judge's feature space too.

  Args:
    config: the run config (data, encoder architecture and optimiser, seed).
    mesh: the ('data',) mesh.
    train_arrays: the training split ({'image', 'label'}).
    cache_dir: where the trained params are kept (None: not cached).
    num_steps: training steps (default: `config.log.judge_steps`).
    batch_size: evaluation batch per call.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               train_arrays: dict[str, np.ndarray], cache_dir: str | None,
               num_steps: int | None = None, batch_size: int = 1000):
    num_classes, shape = datasets.dataset_info(config.data.name)
    self._models = architectures.build_models(config, num_classes, shape)
    self._config = config
    self._mesh = mesh
    self._train = train_arrays
    self._steps = config.log.judge_steps if num_steps is None else num_steps
    if self._steps <= 0:
      raise ValueError(f'the judge needs a positive number of training '
                       f'steps, got {self._steps}')
    self._cache = (epath.Path(cache_dir) / JUDGE_FILE) if cache_dir else None
    self._recipe_file = (epath.Path(cache_dir) / RECIPE_FILE
                         if cache_dir else None)
    self.recipe = _recipe(config, self._steps, train_arrays)
    n_dev = mesh.devices.size
    self._batch = -(-batch_size // n_dev) * n_dev
    self._state = None

  def _fresh_state(self) -> state_lib.SGANState:
    key = jax.random.key(self._config.seed + _SEED_OFFSET)
    offset = steps.pixel_offset(self._config.data.image_range,
                                self._train['image'])
    return jax.jit(lambda k, o: state_lib.create_state(
        self._models, self._config, k, o),
                   out_shardings=sharding.replicated(self._mesh))(key, offset)

  def _fit(self, st: state_lib.SGANState) -> state_lib.SGANState:
    hp = steps.StepConfig.from_config(self._config)
    step = jax.jit(steps.make_encoder_step(self._models, hp),
                   donate_argnums=0)
    sampler = batching.BatchSampler(
        self._train, self._config.data.batch_size,
        seed=self._config.seed + _SEED_OFFSET)
    root = jax.random.key(0)
    for s, local in batching.iterate_batches(sampler, 0, self._steps):
      st, metrics = step(st, sharding.shard_batch(local, self._mesh), root)
      if (s + 1) % 1000 == 0:
        logging.info('judge step %d/%d: loss %.4f', s + 1, self._steps,
                     float(metrics['encoder/loss']))
    return st

  def _ensure(self) -> None:
    if self._state is not None:
      return
    st = self._fresh_state()
    if self._cache_matches():
      params = flax.serialization.from_bytes(st.encoder.params,
                                             self._cache.read_bytes())
      st = st.replace(encoder=st.encoder.replace(
          params=jax.device_put(params, sharding.replicated(self._mesh))))
      logging.info('judge: loaded %s', self._cache)
    else:
      logging.info('judge: training an independent classifier for %d steps',
                   self._steps)
      st = self._fit(st)
      if self._cache is not None and jax.process_index() == 0:
        # The recipe goes first and returns last: in between, a reader finds
        # none and trains its own judge rather than pairing these params
        # with another recipe.
        if self._recipe_file.exists():
          self._recipe_file.unlink()
        with atomic_file.open_for_write(self._cache, binary=True) as f:
          f.write(flax.serialization.to_bytes(
              jax.device_get(st.encoder.params)))
        atomic_file.write_json(self._recipe_file, self.recipe)
    self._state = st
    self._features = jax.jit(
        evaluation.make_encoder_features(
            self._models, steps.StepConfig.from_config(self._config)),
        in_shardings=(sharding.replicated(self._mesh),
                      sharding.batch_sharding(self._mesh)),
        out_shardings=(sharding.batch_sharding(self._mesh),) * 2)

  def _cache_matches(self) -> bool:
    """Whether the cached params were trained with this judge's recipe."""
    if self._cache is None or not self._cache.exists():
      return False
    cached = (json.loads(self._recipe_file.read_text())
              if self._recipe_file.exists() else None)
    if cached != self.recipe:
      # A judge of other data, steps or architecture would score the
      # samples against the wrong classifier without a sign.
      logging.warning('judge: %s was trained with another recipe (or '
                      'before recipes were recorded); training anew',
                      self._cache)
      return False
    return True

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) fc3 features and (N, K) probabilities of uint8 images.

    Args:
      images: (N, H, W, C) uint8.

    Returns:
      The judge's penultimate (fc3) features and its softmax, on the host.
    """
    self._ensure()
    return evaluation.encode_images(self._features, self._state, images,
                                    self._batch,
                                    sharding.batch_sharding(self._mesh))


def _recipe(config: ml_collections.ConfigDict, num_steps: int,
            train_arrays: dict[str, np.ndarray]) -> dict:
  """What determines a judge's params, as JSON (data paths left out: the
  same data may move)."""
  full = json.loads(config.to_json_best_effort())
  data = {k: v for k, v in full['data'].items()
          if k not in ('data_dir', 'manual_dir')}
  return {'steps': int(num_steps), 'seed': full['seed'], 'data': data,
          'model': full['model'], 'optim': full['optim'],
          'encoder': full['encoder'],   # its lr, schedule and flip train it
          'num_examples': int(len(train_arrays['label'])),
          'train_fingerprint': datasets.fingerprint(train_arrays)}
