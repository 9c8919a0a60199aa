"""Trains the paper's Table-1 variants on one budget and tabulates them.

  python -m sgan_jax.ablate --config=configs/mnist.py:quick --workdir=DIR \
      [--seeds=0,1] [--variants=sgan,gan_adv] [--num=10000]

Variants are config switches on the given config (paper Sec. 4.5):

  sgan              the config as given: E, each stack independently, joint.
  sgan_no_joint     no joint phase; stack 0 trains for its steps instead.
  gan_adv_cond_ent  one GAN: stack 0's networks conditioned on the label
                    (model.levels=()), L_adv + L_cond + L_ent, trained for
                    stack 0's plus the joint steps.
  gan_adv_cond      the same without L_ent.
  gan_adv_ent       the same without L_cond (nothing ties G to the label).
  gan_adv           neither: an unconditional GAN.

So every variant makes the same number of pixel-level updates. Each
(variant, seed) trains in DIR/<variant>/seed<S> like `sgan_jax.main` (a rerun
resumes unfinished runs and only re-evaluates finished ones), is evaluated
with `sgan_jax.evaluation` on --num samples, and DIR/ablation.md gets a
markdown table (mean ± std over seeds) with the command, machine and wall
times; DIR/ablation.json the raw metrics. Variants of one seed share an
identical encoder E (same seed, same encoder phase), so their E-based scores
are comparable.
"""

import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from sgan_jax import atomic_file
from sgan_jax import cli
from sgan_jax import config_base
from sgan_jax import datasets
from sgan_jax import evaluation
from sgan_jax import sampling
from sgan_jax import schedule as schedule_lib
from sgan_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Base config, e.g. configs/mnist.py:quick.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Root of the runs.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds of every variant.')
_VARIANTS = flags.DEFINE_list('variants', None, 'Subset of the variants '
                              '(default: all, in the table order).')
_NUM = flags.DEFINE_integer('num', 10000, 'Evaluation samples per run.')
flags.mark_flags_as_required(['config', 'workdir'])


def _no_joint(c: ml_collections.ConfigDict) -> None:
  s = list(c.schedule.stack_steps)
  s[0] += c.schedule.joint_steps
  c.schedule.stack_steps = tuple(s)
  c.schedule.joint_steps = 0


def _single_gan(cond: bool, ent: bool) -> Callable[[ml_collections.ConfigDict],
                                                   None]:
  def apply(c: ml_collections.ConfigDict) -> None:
    config_base.set_levels(c, ())
    if not cond:
      c.loss.cond_weight = 0.0
    if not ent:
      c.loss.ent_weight = 0.0
  return apply


# name -> (table label, config transform), in the order of paper Table 1.
VARIANTS: dict[str, tuple[str, Callable[[ml_collections.ConfigDict], None]]] = {
    'sgan': ('SGAN', lambda c: None),
    'sgan_no_joint': ('SGAN-no-joint', _no_joint),
    'gan_adv_cond_ent': ('GAN (L_adv + L_cond + L_ent)',
                         _single_gan(True, True)),
    'gan_adv_cond': ('GAN (L_adv + L_cond)', _single_gan(True, False)),
    'gan_adv_ent': ('GAN (L_adv + L_ent)', _single_gan(False, True)),
    'gan_adv': ('GAN (L_adv)', _single_gan(False, False)),
}

# (metric, column title, higher is better), as the table shows them.
# The judge columns are absent ('-') when the config trains no judge.
COLUMNS = (('cond_acc', 'cond acc (E)', True),
           ('judge_cond_acc', 'cond acc (judge)', True),
           ('e_is', 'E-IS', True),
           ('e_fid', 'E-FID', False),
           ('judge_fid', 'judge-FID', False),
           ('diversity_ratio', 'diversity (E fc3)', True),
           ('diversity_ratio_judge', 'diversity (judge fc3)', True),
           ('diversity_ratio_pixel', 'diversity (pixels)', True))


def variant_config(base: ml_collections.ConfigDict, name: str,
                   seed: int) -> ml_collections.ConfigDict:
  """The config of one variant and seed (a locked copy of `base`)."""
  if name not in VARIANTS:
    raise ValueError(f'unknown variant {name!r}; expected one of '
                     f'{list(VARIANTS)}')
  c = copy.deepcopy(base)  # locked like `base`: a transform typo raises
  c.seed = seed
  VARIANTS[name][1](c)
  return c


# Per run: training seconds summed over the calls that trained, and the
# step they reached, so a rerun that only re-evaluates keeps the real time.
TRAIN_TIME_FILE = 'ablation_train_time.json'


def _train_seconds(workdir: str, elapsed: float, step: int) -> float:
  """Adds `elapsed` to the run's recorded training time if it trained."""
  path = os.path.join(workdir, TRAIN_TIME_FILE)
  record = {'train_s': 0.0, 'step': -1}
  if os.path.exists(path):
    with open(path) as f:
      record = json.load(f)
  if step != record['step']:
    record = {'train_s': record['train_s'] + elapsed, 'step': step}
    atomic_file.write_json(path, record)
  return record['train_s']


class StoppedEarly(Exception):
  """A run returned before the end of its schedule (SIGTERM, Ctrl-C)."""


def run_variant(base: ml_collections.ConfigDict, name: str, seed: int,
                root: str, num: int) -> dict[str, float]:
  """Trains (or resumes) one run, evaluates it; metrics plus wall time.

  Raises:
    StoppedEarly: training saved and returned before the schedule's end, as
      it does on SIGTERM or Ctrl-C: the ablation must stop there too, not
      evaluate a half-trained run and go on to the next.
  """
  workdir = os.path.join(root, name, f'seed{seed}')
  config = variant_config(base, name, seed)
  start = time.time()
  st = train.train_and_evaluate(config, workdir)
  trained = _train_seconds(workdir, time.time() - start, int(st.step))
  total = schedule_lib.total_steps(schedule_lib.build(config))
  if int(st.step) < total:
    raise StoppedEarly(f'{name} seed {seed} stopped at step {int(st.step)} '
                       f'of {total}; rerun the same command to resume')
  _, metrics, _ = evaluation.evaluate_workdir(workdir, num)
  metrics = dict(metrics, train_s=trained)
  logging.info('%s seed %d: %s', name, seed, {k: round(v, 4) for k, v in
                                              metrics.items()})
  return metrics


def _mean_std(values: list[float | None]) -> str:
  if not values or any(v is None for v in values):
    return '-'
  if len(values) == 1:
    return f'{values[0]:.3f}'
  return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def markdown_table(results: dict[str, list[dict[str, float]]]) -> str:
  """One row per variant (mean ± std over its seeds), then real data."""
  head = ['variant', 'seeds'] + [title for _, title, _ in COLUMNS]
  lines = ['| ' + ' | '.join(head) + ' |',
           '| --- | ---: |' + ' ---: |' * len(COLUMNS)]
  real = None
  for name, runs in results.items():
    cells = [VARIANTS[name][0], str(len(runs))]
    cells += [_mean_std([r.get(key) for r in runs]) for key, _, _ in COLUMNS]
    lines.append('| ' + ' | '.join(cells) + ' |')
    real = real or runs[0]
  if real is not None:
    ref = {'cond_acc': real['real_cond_acc'],
           'judge_cond_acc': real.get('real_judge_cond_acc'),
           'e_is': real['real_e_is'], 'e_fid': real['real_e_fid'],
           'judge_fid': real.get('real_judge_fid'), 'diversity_ratio': 1.0,
           'diversity_ratio_judge': 1.0 if 'real_judge_fid' in real else None,
           'diversity_ratio_pixel': 1.0}
    # Each seed has its own E and judge; the first run's are shown.
    lines.append('| real data (test split; FIDs: train vs test; the first '
                 "run's E and judge) | | " +
                 ' | '.join(_mean_std([ref[key]]) for key, _, _ in COLUMNS)
                 + ' |')
  return '\n'.join(lines)


def write_report(root: str, results: dict[str, list[dict[str, float]]],
                 command: str) -> str:
  """DIR/ablation.md and DIR/ablation.json; returns the markdown path."""
  # null, not the bare NaN token json.dump writes (not JSON), for a ratio
  # over a zero reference; as evaluation.write_metrics does.
  finite = {name: [{k: (v if not isinstance(v, float) or math.isfinite(v)
                        else None) for k, v in r.items()} for r in runs]
            for name, runs in results.items()}
  atomic_file.write_text(os.path.join(root, 'ablation.json'), json.dumps(
      finite, indent=2, sort_keys=True, allow_nan=False))
  minutes = {name: statistics.mean(r['train_s'] for r in runs) / 60
             for name, runs in results.items()}
  text = '\n'.join([
      '# Ablation (paper Table 1 variants)', '',
      f'Command: `{command}`', '',
      f'Machine: {platform.node()}, {os.cpu_count()} CPUs, JAX '
      f'{jax.__version__} on {jax.devices()[0].device_kind} '
      f'({jax.device_count()} device(s)).', '',
      markdown_table(results), '',
      'cond acc: the run\'s encoder E (or the independent judge '
      'classifier, which no generator was trained against) labels the '
      'sample with its conditioning class (chance 0.1 for the variants '
      'without L_cond). E-IS / E-FID / judge-FID: Inception Score / FID '
      'computed with E or the judge instead of Inception (domain-classifier '
      'scores, comparable only within this table). diversity: mean '
      'intra-class pairwise distance of samples over that of real test '
      'images (E fc3, judge fc3, pixels); << 1 is mode collapse.', '',
      'Training minutes per run (mean): ' + ', '.join(
          f'{name} {m:.1f}' for name, m in minutes.items()), ''])
  path = os.path.join(root, 'ablation.md')
  atomic_file.write_text(path, text)
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    names = _VARIANTS.value or list(VARIANTS)
    seeds = [int(s) for s in _SEEDS.value]
    for name in names:
      variant_config(_CONFIG.value, name, seeds[0])  # Fails fast on a typo.
    # Checked before the first run trains, not when it is evaluated.
    num_classes, _ = datasets.dataset_info(_CONFIG.value.data.name)
    try:
      sampling.balanced_labels(_NUM.value, num_classes)
    except ValueError as e:
      raise ValueError(f'--num: {e}') from None
    os.makedirs(_WORKDIR.value, exist_ok=True)
    results = {}
    for name in names:
      results[name] = [run_variant(_CONFIG.value, name, seed, _WORKDIR.value,
                                   _NUM.value) for seed in seeds]
      # Rewritten after every variant: an interrupted ablation keeps a table.
      path = write_report(_WORKDIR.value, results,
                          'python -m sgan_jax.ablate ' + ' '.join(sys.argv[1:]))
  except StoppedEarly as e:
    logging.warning('%s', e)
    print(f'stopped: {e}')
    return
  except cli.USER_ERRORS as e:
    cli.exit_with(e)
  print(f'wrote {path}')
  print(open(path).read())


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
