"""TensorFlow and tfds, kept off the GPU, or None where they are not installed.

Only the data sources and TensorBoard use TensorFlow: tfds, JPEG decoding for
CIFAR-10's tars, and clu's summary writer. Importing it through here hides the
GPU from TF before its first use, so that JAX owns the accelerator memory.
"""

# pylint: disable=g-import-not-at-top,invalid-name

try:
  import tensorflow as tf
  import tensorflow_datasets as tfds
except ImportError:
  # A JAX-only environment (e.g. a GPU image without TF) can still train from
  # prepared arrays (`<manual_dir>/{train,test}.npz`); tfds sources then fail
  # with a DataError saying so.
  tf = tfds = None
else:
  # TF would otherwise grab (all of) the GPU memory on first use, which
  # belongs to JAX. RuntimeError means TF initialised its devices before this
  # import; it is then too late to change them, and not ours to fail on.
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    pass
  # Progress bars would flood the training log with carriage returns.
  tfds.disable_progress_bar()


def summary_writer(logdir: str):
  """clu's TensorBoard writer for `logdir`, or None without clu / TensorFlow.

  Imported here because the writer starts TensorFlow, whose GPU must be
  hidden first (above).

  Args:
    logdir: the folder of the event files.

  Returns:
    A `clu.metric_writers.SummaryWriter`, or None where clu or TensorFlow is
    not installed (a JAX-only image still trains and evaluates).
  """
  if tf is None:
    return None
  try:
    from clu import metric_writers
  except ImportError:
    return None
  return metric_writers.SummaryWriter(logdir)
