"""Files written beside their destination and renamed over it."""

import json
import os

import pytest

from sgan_jax import atomic_file


def test_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
  path = tmp_path / 'sub' / 'record.json'
  atomic_file.write_json(path, {'b': 1, 'a': [2.5]})
  assert json.loads(path.read_text()) == {'a': [2.5], 'b': 1}
  assert path.read_text().index('"a"') < path.read_text().index('"b"')
  with atomic_file.open_for_write(path, binary=True) as f:
    f.write(b'\x00new')
  assert path.read_bytes() == b'\x00new'
  assert os.listdir(path.parent) == ['record.json']


def test_a_failed_write_keeps_the_old_file(tmp_path):
  path = tmp_path / 'metrics.json'
  atomic_file.write_text(path, 'old')
  with pytest.raises(RuntimeError, match='killed'):
    with atomic_file.open_for_write(path) as f:
      f.write('half of the ne')
      raise RuntimeError('killed mid-write')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['metrics.json']
