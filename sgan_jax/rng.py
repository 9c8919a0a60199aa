"""Named PRNG streams.

Every random quantity is derived from the root key by `fold_in` with named
constants, never by positional `split`: adding a stream later leaves all the
existing ones unchanged, and the noise of global step s is a function of
(seed, s) alone, so a resumed run draws exactly what an uninterrupted one did.

    key(step s, stack i, stream) =
        fold_in(fold_in(fold_in(root, s), STACK_BASE + i), stream)
"""

import jax

# Streams within one (step, stack). The values are part of the reproducibility
# contract: never renumber, only add.
Z = 1               # the generator's noise z_i
D_DROPOUT = 2       # dropout inside D_i
D_INPUT_NOISE = 3   # Gaussian noise added to D_i's inputs
G_DROPOUT = 4
D_REAL_PASS = 5     # parents of D_i's dropout and noise keys in its pass
D_FAKE_PASS = 6     # over real h_i, and over the fake batch
D_STEP = 10         # sub-keys of the D update ...
G_STEP = 11         # ... and of the G update(s)
ENCODER = 20        # the encoder's pre-training step
ENCODER_FLIP = 21   # which images E's step mirrors (encoder.random_flip)

# Folded into the root instead of a step number, for non-training use; far
# above any step count.
EVAL = 0x7FFFFFF0
INIT = 0x7FFFFFF1
BN_CALIBRATION = 0x7FFFFFF2
_STACK_BASE = 1000


def step_key(root: jax.Array, step: jax.Array | int) -> jax.Array:
  """Key of one global training step."""
  return jax.random.fold_in(root, step)


def stack_key(key: jax.Array, stack: int) -> jax.Array:
  """Key of stack i within a step (or within an eval/sample call)."""
  return jax.random.fold_in(key, _STACK_BASE + stack)


def stream(key: jax.Array, name: int) -> jax.Array:
  """Key of one named stream (Z, D_DROPOUT, ...) below a stack key."""
  return jax.random.fold_in(key, name)


def eval_key(root: jax.Array) -> jax.Array:
  """Fixed key for sample grids, so grids are comparable across steps."""
  return jax.random.fold_in(root, EVAL)


def init_key(root: jax.Array) -> jax.Array:
  """Key for parameter initialisation."""
  return jax.random.fold_in(root, INIT)


def bn_calibration_key(root: jax.Array) -> jax.Array:
  """Key of the samples that fix the sampling BN statistics."""
  return jax.random.fold_in(root, BN_CALIBRATION)
