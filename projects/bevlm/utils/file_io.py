"""Writing files atomically and reading data pickles without running code.

Every file the tools write goes through :func:`atomic_write`: a temp file in the target folder,
then a rename, so an interrupted job never leaves a half-written file where a good one was, and
the result gets the usual permissions (``0o666`` minus the process umask, as ``open`` gives;
``tempfile.mkstemp`` alone would leave it ``0o600``).

Info files are pickles of plain data. :func:`load_plain_pickle` reads them with an unpickler that
resolves no global at all, so a hostile file (one whose pickle names ``os.system`` or reaches it
through ``builtins.getattr``) is refused before any of its code can run; dicts, lists, tuples,
strings, bytes, numbers, booleans and None need no global and load as usual.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from typing import Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[io.IOBase], None], binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temp file + rename (never half-written).

    Args:
        path: the destination (its folder is created).
        write: called with the open temp file.
        binary: open the temp file in binary mode.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(obj: Any, path: str, indent: int | None = 4) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=indent))


#: Types a plain-data pickle may hold (checked before writing, so every file written here loads).
PLAIN_TYPES = (dict, list, tuple, str, bytes, int, float, bool, type(None))


class UnsafePickleError(pickle.UnpicklingError):
    """A data pickle names a Python global (a class or function): refused unread."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):  # called for every global the pickle names
        raise UnsafePickleError(
            f"{self._path}: refusing to load the global {module}.{name}; an info file holds plain data "
            f"only (dicts, lists, strings, numbers). Fix: regenerate it with tools/create_data.py, or "
            f"convert it to plain types (e.g. numpy arrays with .tolist())")


def load_plain_pickle(path: str) -> Any:
    """Load a pickle of plain data without resolving any global (no code can run).

    Raises:
        UnsafePickleError: the pickle names a global (a class, a function, a numpy array).
        ValueError: the file is not a readable pickle (truncated, empty, another format).
    """
    with open(path, "rb") as f:
        try:
            return _PlainUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
            raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e}). Fix: regenerate "
                             f"it with tools/create_data.py") from e


def _first_non_plain(obj: Any, where: str = "") -> str | None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad = _first_non_plain(k, f"{where}[key {k!r}]") or _first_non_plain(v, f"{where}[{k!r}]")
            if bad:
                return bad
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad = _first_non_plain(v, f"{where}[{i}]")
            if bad:
                return bad
        return None
    # exact types: subclasses (numpy.float64 is a float subclass) would pickle through a global
    return None if type(obj) in PLAIN_TYPES else f"{where or '<root>'}: {type(obj).__module__}.{type(obj).__name__}"


def dump_plain_pickle(obj: Any, path: str) -> None:
    """Write plain data (see :data:`PLAIN_TYPES`) as a pickle, atomically.

    Raises:
        TypeError: ``obj`` holds another type (named with its location), which
            :func:`load_plain_pickle` would refuse; nothing is written.
    """
    bad = _first_non_plain(obj)
    if bad:
        raise TypeError(f"{path}: refusing to write a non-plain value at {bad}. Fix: convert it to plain "
                        f"types (float(), int(), .tolist()) before writing")
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL), binary=True)
