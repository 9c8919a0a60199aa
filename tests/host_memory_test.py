"""host_memory: freed buffers stay mapped, so reusing them costs no faults."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from sgan_jax import host_memory

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocates, touches and frees 4 x 8 MiB blocks (one XLA:CPU step's worth of
# buffers) a few times, then prints the minor page faults per round.
_ROUNDS = r'''
import ctypes, resource, sys
if sys.argv[1] == 'keep':
  from sgan_jax import host_memory
  assert host_memory.keep_freed_memory()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 8 * 2**20
def one_round():
  blocks = [libc.malloc(size) for _ in range(4)]
  for b in blocks:
    ctypes.memset(b, 1, size)
  for b in blocks:
    libc.free(b)
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  one_round()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
'''

_GLIBC = sys.platform.startswith('linux') and 'libc.so.6' in str(
    ctypes.util.find_library('c'))


def _faults_per_round(mode: str) -> float:
  out = subprocess.run([sys.executable, '-c', _ROUNDS, mode], check=True,
                       capture_output=True, text=True, cwd=_ROOT,
                       env=dict(os.environ, PYTHONPATH=_ROOT), timeout=120)
  return float(out.stdout.strip())


@pytest.mark.skipif(not _GLIBC, reason='mallopt settings are glibc only')
def test_freed_blocks_are_reused_without_page_faults():
  # glibc's defaults mmap and unmap such blocks: every round faults all
  # 8192 of their pages in again.
  assert _faults_per_round('default') > 4000
  assert _faults_per_round('keep') < 100


@pytest.mark.skipif(not _GLIBC, reason='mallopt settings are glibc only')
def test_keep_freed_memory_can_be_called_again():
  assert host_memory.keep_freed_memory()
  assert host_memory.keep_freed_memory()
