"""Sample quality of a trained SGAN, measured with the run's own encoder E.

`make_evaluator(models, config, mesh)` returns an `Evaluator`: called as
`evaluator(state, key)` it draws N class-balanced samples top-down and returns
a flat dict of floats. `evaluate_workdir(workdir)` does the same for the latest
checkpoint of a run and writes `<workdir>/eval/metrics.json` (the
`python -m sgan_jax.evaluate` CLI).

Every score is computed twice, on samples and on real data, so each number has
a reference:

  cond_acc            E's class of each sample == its conditioning label;
                      real_cond_acc is E's test accuracy.
  judge_cond_acc      the same with an independent classifier that no
                      generator was trained against (`judge.Judge`, when
                      `log.judge_steps` > 0); real_judge_cond_acc its test
                      accuracy. judge_fid and diversity_judge /
                      diversity_ratio_judge are e_fid and diversity_fc3 on
                      the judge's fc3 features: a feature space G never
                      optimised against, so the fairer FID and diversity.
  e_is, e_is_std      Inception Score computed with E's softmax in place of
                      Inception's (10 splits, mean and std); real_e_is on the
                      test set. Ceiling: the number of classes.
  e_fid               Frechet distance between Gaussian fits of E's fc3
                      features of the samples and of the whole test set;
                      real_e_fid (the floor) compares a random train subset of
                      the same size with the test set.
  diversity_fc3       Mean pairwise L2 distance of E-fc3 features within each
                      class, averaged over classes; diversity_pixel the same
                      on pixels in [0, 1]; real_diversity_* on the test set.
  diversity_ratio     diversity_fc3 / real_diversity_fc3 (and
                      diversity_ratio_pixel): mode collapse shows as << 1.

The e_* scores are *domain-classifier* scores: E is a small classifier trained
by this run, so they are comparable between runs that share an encoder (and
with their real_* references), never with published Inception IS/FID numbers.
Those need the FID InceptionV3 and its weights (`sgan_jax/inception.py`):
with `inception_weights` (or any `inception_fn`) the evaluator adds
inception_is/_std, inception_fid and their real_* references, computed the
same way on InceptionV3's softmax and pool3 features.

Single-process: samples and test images are gathered on this host.
"""

from collections.abc import Callable
import hashlib
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sgan_jax import atomic_file
from sgan_jax import datasets
from sgan_jax import input_pipeline
from sgan_jax import jitted
from sgan_jax import metric_math
from sgan_jax import models as models_lib
from sgan_jax import rng
from sgan_jax import runs
from sgan_jax import sampling
from sgan_jax import sharding
from sgan_jax import state as state_lib
from sgan_jax import steps
from sgan_jax import tensorflow_cpu

Metrics = dict[str, float]
# uint8 (N, H, W, C) images -> (pool features (N, F), class probabilities
# (N, K)), e.g. InceptionV3's pool3 features and softmax.
FeatureFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

EVAL_DIR = 'eval'
METRICS_FILE = 'metrics.json'
# TensorBoard tags are 'eval/<key>' both in <workdir>/eval (the CLI) and in
# the training run's events, so TensorBoard overlays the two.
TAG_PREFIX = 'eval/'
INCEPTION_NOTE = (
    'Inception IS/FID not computed: pass --inception_weights (the FID '
    'InceptionV3, converted once with python -m sgan_jax.convert_inception; '
    'see sgan_jax/inception.py)')


# ---------------------------------------------------------------------------
# The evaluator: samples + E, with real-data statistics cached.
# ---------------------------------------------------------------------------


def make_encoder_features(models: models_lib.Models, hp: steps.StepConfig
                          ) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """(state, uint8 NHWC images) -> (E's fc3 features, E's softmax).

  Images go through exactly the conversion of training batches (x/255, then
  `steps.to_model_space`), so samples and real images are treated alike.
  """

  def features(st: state_lib.SGANState, images: jax.Array):
    x = steps.to_model_space(steps.images01({'image': images}), st, hp)
    variables = {'params': st.encoder.params}
    fc3 = models.encoder.apply(variables, x, stop='fc3')
    logits = models.encoder.apply(variables, fc3, start='fc3', stop='logits')
    return (fc3.astype(jnp.float32),
            jax.nn.softmax(logits.astype(jnp.float32), axis=-1))

  return features


def encode_images(features_fn, st: state_lib.SGANState, images: np.ndarray,
                  batch_size: int, sharding: jax.sharding.Sharding
                  ) -> tuple[np.ndarray, np.ndarray]:
  """E's (fc3, softmax) of host uint8 images on the host.

  Args:
    features_fn: `make_encoder_features(...)`, jitted with batch shardings.
    st: the state whose encoder is used.
    images: (N, H, W, C) uint8.
    batch_size: images per call; the last chunk is padded, so one shape is
      compiled.
    sharding: the batch sharding of the chunks.

  Returns:
    ((N, F) float32 features, (N, K) probabilities).
  """
  n = len(images)
  fc3, probs = [], []
  for s in range(0, n, batch_size):
    idx = np.minimum(np.arange(s, s + batch_size), n - 1)
    f, p = features_fn(st, jax.device_put(images[idx], sharding))
    fc3.append(np.asarray(f)[:n - s])
    probs.append(np.asarray(p)[:n - s])
  return np.concatenate(fc3), np.concatenate(probs)


class Evaluator:
  """`evaluator(state, key) -> Metrics`; see the module docstring for keys.

  Built once per run: the sampling and E functions compile on the first call
  (one shape each) and the real-data statistics are computed once per encoder
  (re-done only if E's params or the pixel offset change, e.g. during the
  encoder phase).
  """

  def __init__(self, models: models_lib.Models,
               config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
               num: int = 10000, batch_size: int = 1000,
               test_arrays: dict[str, np.ndarray] | None = None,
               train_arrays: dict[str, np.ndarray] | None = None,
               sample_fn: Callable[..., jax.Array] | None = None,
               inception_fn: FeatureFn | None = None,
               judge_fn: FeatureFn | None = None,
               splits: int = 10):
    """See `make_evaluator`."""
    if jax.process_count() > 1:
      # Samples and test images are gathered on one host (device_put of host
      # arrays); a multi-process version needs per-process slices.
      raise NotImplementedError('the evaluator runs in a single process; '
                                f'this run has {jax.process_count()}')
    if batch_size <= 0:
      raise ValueError(f'evaluation batch size must be positive, got '
                       f'{batch_size}')
    self.num_classes = models.num_classes
    self.labels = sampling.balanced_labels(num, models.num_classes)
    self.splits = min(splits, num)
    n_dev = mesh.devices.size
    self._batch = -(-min(batch_size, num) // n_dev) * n_dev
    repl = sharding.replicated(mesh)
    self._batch_sh = sharding.batch_sharding(mesh)
    if sample_fn is None:
      sample_fn = jitted.jit_sample(models, mesh)
    self._sample_fn = sample_fn
    self._calibrate = sampling.BatchStatsCalibrator(models, config, mesh)
    self._features = jax.jit(
        make_encoder_features(models, steps.StepConfig.from_config(config)),
        in_shardings=(repl, self._batch_sh),
        out_shardings=(self._batch_sh, self._batch_sh))
    if test_arrays is None:
      test_arrays, _ = input_pipeline.load_split(config.data, 'test')
    if train_arrays is None:
      train_arrays, _ = input_pipeline.load_split(config.data, 'train')
    self._test = test_arrays
    # The FID floor uses as many real train images as there are samples: FID
    # is biased upwards for small N, so only equal sizes compare. A fixed
    # random subset (train splits may be sorted), copied so the caller's full
    # array can be freed.
    n_train = len(train_arrays['label'])
    pick = np.sort(np.random.default_rng(0).permutation(n_train)[:num])
    self._train_images = train_arrays['image'][pick]
    self._inception_fn = inception_fn
    self._judge_fn = judge_fn
    self._real: Metrics | None = None
    self._real_stats: dict[str, Any] = {}
    self._real_fingerprint: str | None = None

  @property
  def num(self) -> int:
    return len(self.labels)

  @property
  def num_test(self) -> int:
    return len(self._test['label'])

  @property
  def num_train_floor(self) -> int:
    return len(self._train_images)

  def __call__(self, st: state_lib.SGANState, key: jax.Array) -> Metrics:
    """Metrics of `num` samples of `st` drawn with `key`, plus references.

    Args:
      st: a replicated SGANState (after the encoder phase: before it E is
        untrained and the scores mean nothing).
      key: sampling key; a fixed one (e.g. `rng.eval_key(root)`) makes the
        numbers of different steps use the same z.

    Returns:
      Flat {name: float}; see the module docstring.
    """
    start = time.perf_counter()
    real = self.real_metrics(st)
    images = sampling.generate(self._sample_fn, self._calibrate(st),
                               self.labels, key,
                               batch_size=self._batch,
                               sharding=self._batch_sh)
    out = dict(real)
    out.update(self._scores(st, images, self.labels))
    logging.info('evaluated %d samples in %.1f s', self.num,
                 time.perf_counter() - start)
    return out

  def real_metrics(self, st: state_lib.SGANState) -> Metrics:
    """The real_* references (cached per encoder)."""
    fingerprint = _fingerprint((st.encoder.params, st.pixel_offset))
    if fingerprint == self._real_fingerprint:
      return self._real
    images, labels = self._test['image'], self._test['label']
    fc3, probs = self._encode(st, images)
    floor_fc3, _ = self._encode(st, self._train_images)
    self._real_stats = {'fc3': metric_math.gaussian_stats(fc3)}
    splits = min(self.splits, len(labels))
    real_is, real_is_std = metric_math.inception_score(probs, splits)
    real = {
        'real_cond_acc': metric_math.accuracy(probs, labels),
        'real_e_is': real_is,
        'real_e_is_std': real_is_std,
        'real_e_fid': _fid(floor_fc3, self._real_stats['fc3']),
        'real_diversity_fc3': metric_math.class_diversity(fc3, labels),
        'real_diversity_pixel': (
            metric_math.class_diversity(images, labels) / 255.0),
    }
    if self._judge_fn is not None:
      feats, judge_probs = self._judge(images)
      floor_feats, _ = self._judge(self._train_images)
      self._real_stats['judge'] = metric_math.gaussian_stats(feats)
      real['real_judge_cond_acc'] = metric_math.accuracy(judge_probs, labels)
      real['real_judge_fid'] = _fid(floor_feats, self._real_stats['judge'])
      real['real_diversity_judge'] = metric_math.class_diversity(feats,
                                                                 labels)
    if self._inception_fn is not None:
      pool, inception_probs = self._inception(images)
      floor_pool, _ = self._inception(self._train_images)
      self._real_stats['pool'] = metric_math.gaussian_stats(pool)
      real['real_inception_is'], real['real_inception_is_std'] = (
          metric_math.inception_score(inception_probs, splits))
      real['real_inception_fid'] = _fid(floor_pool, self._real_stats['pool'])
    self._real, self._real_fingerprint = real, fingerprint
    return real

  def _scores(self, st, images: np.ndarray, labels: np.ndarray) -> Metrics:
    fc3, probs = self._encode(st, images)
    e_is, e_is_std = metric_math.inception_score(probs, self.splits)
    out = {
        'cond_acc': metric_math.accuracy(probs, labels),
        'e_is': e_is,
        'e_is_std': e_is_std,
        'e_fid': _fid(fc3, self._real_stats['fc3']),
        'diversity_fc3': metric_math.class_diversity(fc3, labels),
        'diversity_pixel': metric_math.class_diversity(images, labels) / 255.0,
    }
    out['diversity_ratio'] = metric_math.ratio(
        out['diversity_fc3'], self._real['real_diversity_fc3'])
    out['diversity_ratio_pixel'] = metric_math.ratio(
        out['diversity_pixel'], self._real['real_diversity_pixel'])
    if self._judge_fn is not None:
      feats, judge_probs = self._judge(images)
      out['judge_cond_acc'] = metric_math.accuracy(judge_probs, labels)
      out['judge_fid'] = _fid(feats, self._real_stats['judge'])
      out['diversity_judge'] = metric_math.class_diversity(feats, labels)
      out['diversity_ratio_judge'] = metric_math.ratio(
          out['diversity_judge'], self._real['real_diversity_judge'])
    if self._inception_fn is not None:
      pool, inception_probs = self._inception(images)
      out['inception_is'], out['inception_is_std'] = (
          metric_math.inception_score(inception_probs, self.splits))
      out['inception_fid'] = _fid(pool, self._real_stats['pool'])
    return out

  def _encode(self, st, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return encode_images(self._features, st, images, self._batch,
                         self._batch_sh)

  def _inception(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _batched(self._inception_fn, images, self._batch)

  def _judge(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _batched(self._judge_fn, images, self._batch)


def _fid(features: np.ndarray,
         reference: tuple[np.ndarray, np.ndarray]) -> float:
  """Frechet distance of a Gaussian fit of `features` to cached (mu, sigma)."""
  return metric_math.frechet_distance(*metric_math.gaussian_stats(features),
                                      *reference)


def _batched(feature_fn: FeatureFn, images: np.ndarray,
             batch: int) -> tuple[np.ndarray, np.ndarray]:
  feats, probs = [], []
  for s in range(0, len(images), batch):
    f, p = feature_fn(images[s:s + batch])
    feats.append(np.asarray(f))
    probs.append(np.asarray(p))
  return np.concatenate(feats), np.concatenate(probs)


def make_evaluator(models: models_lib.Models,
                   config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh, *, num: int = 10000,
                   batch_size: int = 1000,
                   test_arrays: dict[str, np.ndarray] | None = None,
                   train_arrays: dict[str, np.ndarray] | None = None,
                   sample_fn: Callable[..., jax.Array] | None = None,
                   inception_fn: FeatureFn | None = None,
                   judge_fn: FeatureFn | None = None
                   ) -> Evaluator:
  """Builds the reusable evaluator of a run.

  Args:
    models: the run's module definitions.
    config: the run config (reads `data` and the pixel range).
    mesh: the ('data',) mesh; samples and E batches are split over it.
    num: samples per evaluation, a positive multiple of the classes.
    batch_size: samples (and test images) per device call; rounded up to a
      multiple of the devices.
    test_arrays: the test split ({'image': uint8 NHWC, 'label'}); default:
      `input_pipeline.load_split(config.data, 'test')`.
    train_arrays: the train split (only a random subset of `num` images is
      kept, for the FID floor); default: loaded like the test split. The
      trainer passes the arrays it already holds.
    sample_fn: a jitted `sampling.make_sample_fn` with batch shardings (the
      trainer's `compiled['sample']`); default: compiled here.
    inception_fn: optional host function uint8 images -> (pool features,
      probabilities) that adds the inception_* metrics.
    judge_fn: optional host function uint8 images -> (features, class
      probabilities) of an independent classifier (`judge.Judge`); adds
      judge_cond_acc, judge_fid and diversity_ratio_judge.

  Returns:
    An `Evaluator`; `evaluator(state, key)` returns the metrics.

  Raises:
    ValueError: `num` is not a positive multiple of the classes.
    datasets.DataError: the data cannot be loaded.
    NotImplementedError: more than one JAX process.
  """
  return Evaluator(models, config, mesh, num=num, batch_size=batch_size,
                   test_arrays=test_arrays, train_arrays=train_arrays,
                   sample_fn=sample_fn, inception_fn=inception_fn,
                   judge_fn=judge_fn)


def _fingerprint(tree: Any) -> str:
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(jax.device_get(tree)):
    leaf = np.asarray(leaf)
    h.update(str((leaf.shape, leaf.dtype)).encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


# ---------------------------------------------------------------------------
# Inception and the workdir entry point.
# ---------------------------------------------------------------------------


def load_inception(path: str) -> FeatureFn:
  """The FID InceptionV3's (pool3 features, IS softmax) from a `.npz`.

  Args:
    path: the `.npz` written by `python -m sgan_jax.convert_inception` from
      pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`.

  Returns:
    A `FeatureFn` over uint8 images of any size (resized to 299 x 299).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a readable .npz, or not that network's arrays.
  """
  # Imported here: only runs with --inception_weights pay for tracing it.
  from sgan_jax import inception  # pylint: disable=g-import-not-at-top
  return inception.make_feature_fn(inception.load_variables(path))


def evaluate_workdir(workdir: str, num: int = 10000, *,
                     inception_weights: str | None = None,
                     seed: int | None = None, batch_size: int = 1000,
                     write: bool = True) -> tuple[int, Metrics, list[str]]:
  """Evaluates the latest checkpoint of a training run.

  Args:
    workdir: the run's --workdir.
    num: number of samples, a positive multiple of the classes.
    inception_weights: optional InceptionV3 `.npz` (see `load_inception`).
    seed: sampling seed; default the run's own fixed evaluation key (the one
      of its sample grids).
    batch_size: samples per device call.
    write: write `<workdir>/eval/metrics.json` and, when clu is importable,
      TensorBoard events under `<workdir>/eval`.

  Returns:
    (checkpoint step, metrics, notes): notes are one-line remarks on what was
    not computed.

  Raises:
    FileNotFoundError: no run or no checkpoint in `workdir`, or no weights
      file.
    ValueError: bad `num` / `batch_size`, or unreadable data or weights.
  """
  # Cheap checks first: a typo should fail before a checkpoint is restored.
  config = runs.load_config(workdir)
  num_classes, _ = datasets.dataset_info(config.data.name)
  sampling.balanced_labels(num, num_classes)
  if batch_size <= 0:
    raise ValueError(f'--batch_size must be positive, got {batch_size}')
  inception_fn = (load_inception(inception_weights)
                  if inception_weights else None)
  models, st, mesh, config = runs.restore_latest(workdir)
  train_arrays, _ = input_pipeline.load_split(config.data, 'train')
  judge_fn = None
  if config.log.get('judge_steps', 0) > 0:
    # Imported here: the judge is built on this module's feature helpers.
    from sgan_jax import judge  # pylint: disable=g-import-not-at-top
    judge_fn = judge.Judge(config, mesh, train_arrays,
                           cache_dir=os.path.join(workdir, EVAL_DIR))
  evaluator = make_evaluator(models, config, mesh, num=num,
                             batch_size=batch_size, train_arrays=train_arrays,
                             inception_fn=inception_fn, judge_fn=judge_fn)
  key = rng.eval_key(jax.random.key(config.seed if seed is None else seed))
  metrics = evaluator(st, key)
  step = int(st.step)
  notes = [] if inception_fn is not None else [INCEPTION_NOTE]
  notes.append(f'{num} samples ({num // num_classes} per class) vs '
               f'{evaluator.num_test} test images; FID floor from '
               f'{evaluator.num_train_floor} train images')
  if write:
    write_metrics(os.path.join(workdir, EVAL_DIR), step, metrics, notes)
  return step, metrics, notes


def write_metrics(eval_dir: str, step: int, metrics: Metrics,
                  notes: list[str]) -> str:
  """Writes `eval_dir/metrics.json` and TensorBoard events; returns the path.

  The JSON holds {'step', 'metrics': {name: float}, 'notes': [str]}; NaN
  (e.g. a ratio over a zero reference) is written as null.
  """
  path = os.path.join(eval_dir, METRICS_FILE)
  record = {'step': step,
            'metrics': {k: (v if np.isfinite(v) else None)
                        for k, v in sorted(metrics.items())},
            'notes': notes}
  atomic_file.write_text(path, json.dumps(record, indent=2))
  writer = tensorflow_cpu.summary_writer(eval_dir)
  if writer is None:
    # The JSON is the record then.
    logging.warning('clu/TensorFlow unavailable: no TensorBoard events for '
                    'the evaluation')
    return path
  writer.write_scalars(step, {TAG_PREFIX + k: v for k, v in metrics.items()})
  writer.close()
  return path


def format_metrics(step: int, metrics: Metrics, notes: list[str]) -> str:
  """A human-readable table: each sample score beside its real reference."""
  rows = [('cond_acc', 'real_cond_acc', 'E accuracy: label of sample vs '
           'test label'),
          ('judge_cond_acc', 'real_judge_cond_acc', 'the same with an '
           'independent classifier'),
          ('e_is', 'real_e_is', 'IS with E (domain classifier); max = '
           'classes'),
          ('e_fid', 'real_e_fid', 'FID on E fc3 vs test; real = train '
           'subset (floor)'),
          ('diversity_fc3', 'real_diversity_fc3', 'mean intra-class pairwise '
           'L2, E fc3'),
          ('diversity_pixel', 'real_diversity_pixel', 'the same on pixels in '
           '[0, 1]'),
          ('judge_fid', 'real_judge_fid', 'FID on the judge\'s fc3 vs test'),
          ('diversity_judge', 'real_diversity_judge', 'intra-class pairwise '
           'L2, judge fc3'),
          ('inception_is', 'real_inception_is', 'Inception Score'),
          ('inception_fid', 'real_inception_fid', 'Inception FID')]
  lines = [f'checkpoint step {step}',
           f'{"metric":<16}{"samples":>16}{"real":>16}  meaning']
  for key, real_key, meaning in rows:
    if key not in metrics:
      continue
    sample, real = _show(metrics, key), _show(metrics, real_key)
    lines.append(f'{key:<16}{sample:>16}{real:>16}  {meaning}')
  judged = (f', {metrics["diversity_ratio_judge"]:.3f} (judge fc3)'
            if 'diversity_ratio_judge' in metrics else '')
  lines.append(f'diversity_ratio {metrics["diversity_ratio"]:.3f} (E fc3), '
               f'{metrics["diversity_ratio_pixel"]:.3f} (pixels){judged}: '
               'samples / real; << 1 means mode collapse')
  lines += [f'note: {n}' for n in notes]
  return '\n'.join(lines)


def _show(metrics: Metrics, key: str) -> str:
  if key not in metrics:
    return '-'
  text = f'{metrics[key]:.4g}'
  if f'{key}_std' in metrics:
    text += f' ± {metrics[key + "_std"]:.2g}'
  return text
