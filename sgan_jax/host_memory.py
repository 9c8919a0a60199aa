"""Host allocator settings that keep XLA:CPU's step buffers out of the kernel.

XLA:CPU allocates every execution's buffers afresh through the C library's
malloc and frees them when the call returns. With glibc's defaults, large
blocks are mmap'd and unmapped each time, and the heap is trimmed and grown
again in small increments, so each training step touches its working set as
new pages: on the 2-core VM of `benchmarks/RESULTS.md` the MNIST encoder step
took ~3,300 minor page faults and spent ~20 % of its time in the kernel.
Serving every block from the heap (no mmap), never trimming it, and growing
it in large increments makes the pages stay mapped between steps.

The cost is that memory freed by the process is kept for reuse rather than
returned to the system: the resident size stays at its peak.
"""

import ctypes
import ctypes.util

from absl import logging

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

# Grow the heap 256 MiB at a time: larger than one step's buffers for every
# config here, so a step never extends the heap it freed the call before.
_TOP_PAD_BYTES = 256 * 2**20
# The largest int mallopt takes: never trim.
_NEVER = 2**31 - 1


def keep_freed_memory() -> bool:
  """Tells glibc to keep freed memory mapped for the next step's buffers.

  Safe to call more than once and on any platform: where the C library is
  not glibc (macOS, musl) nothing happens.

  Returns:
    Whether the settings took effect.
  """
  name = ctypes.util.find_library('c')
  try:
    libc = ctypes.CDLL(name or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    logging.info('host_memory: no glibc mallopt; allocator left as is')
    return False
  # mallopt returns 1 on success.
  ok = all(mallopt(param, value) == 1 for param, value in (
      (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER),
      (_M_TOP_PAD, _TOP_PAD_BYTES)))
  if not ok:
    logging.warning('host_memory: mallopt refused a setting; allocator '
                    'partly at its defaults')
  return ok
