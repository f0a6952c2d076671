"""Data pickles never run code; atomic writes leave usual permissions and never half-written files."""
import os
import pickle
import stat

import numpy as np
import pytest

from bevlm.datasets.drive_dataset import _load_info_file
from bevlm.utils import (UnsafePickleError, atomic_write_json, dump_plain_pickle, load_plain_pickle)


class _RunsCode:
    """Unpickles to ``os.system(cmd)``: the classic pickle payload."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def _getattr_chain(cmd: str) -> bytes:
    """``getattr(__import__('os'), 'system')(cmd)`` spelt with ``builtins`` names only (protocol 0)."""
    return (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'" + cmd.encode()
            + b"'\ntR.")


def _hostile(tmp_path, payload, name):
    marker = tmp_path / f"{name}.ran"
    path = tmp_path / f"{name}.pkl"
    if callable(payload) and not isinstance(payload, type):
        path.write_bytes(payload(f"touch {marker}"))
    else:
        with open(path, "wb") as f:
            pickle.dump({"metainfo": {}, "data_list": [payload(f"touch {marker}")]}, f)
    return str(path), marker


@pytest.mark.parametrize("payload", [_RunsCode, _getattr_chain])
@pytest.mark.parametrize("protocol_name", ["plain", "info"])
def test_hostile_info_pickle_is_refused_and_never_runs(tmp_path, payload, protocol_name):
    path, marker = _hostile(tmp_path, payload, payload.__name__.strip("_"))
    load = load_plain_pickle if protocol_name == "plain" else _load_info_file
    with pytest.raises(UnsafePickleError, match=os.path.basename(path)):
        load(path)
    assert not marker.exists()


def test_legitimate_info_file_round_trips_with_usual_permissions(tmp_path):
    obj = {"metainfo": {"classes": ("car",), "version": "v1.0-mini"},
           "data_list": [{"token": "a", "ego2global": np.eye(4).tolist(), "prev2curr": None, "ok": True,
                          "x": 1.5, "n": 3, "raw": b"\x00"}]}
    path = str(tmp_path / "infos.pkl")
    dump_plain_pickle(obj, path)
    assert load_plain_pickle(path) == obj
    assert _load_info_file(path) == obj
    expected = 0o666 & ~_umask()
    assert stat.S_IMODE(os.stat(path).st_mode) == expected


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_non_plain_value_is_refused_before_writing_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "infos.pkl"
    dump_plain_pickle({"data_list": [1]}, str(path))
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"\['data_list'\]\[0\]\['speed'\]: numpy.float64"):
        dump_plain_pickle({"data_list": [{"speed": np.float64(1.0)}]}, str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["infos.pkl"]  # no temp file left


@pytest.mark.parametrize("content", [b"", b"\x80\x05garbage", b"not a pickle at all"])
def test_unreadable_pickle_names_the_file(tmp_path, content):
    path = tmp_path / "broken.pkl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.pkl: not a readable pickle"):
        load_plain_pickle(str(path))


def test_atomic_json_has_usual_permissions(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json({"a": 1}, str(path))
    assert path.read_text() == '{\n    "a": 1\n}'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()
