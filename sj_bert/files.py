"""Reading and writing the small files sj-bert keeps: JSON and text written atomically, read
with errors that name the file, and whole folders moved into place file by file.

Every writer goes to a temporary name beside the target and renames it into place, so a reader
(or a run killed mid-write) never sees half a file; a failed write leaves no temporary behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional, Union

__all__ = ["cache_dir", "read_json", "write_json", "write_text", "write_bytes", "move_into"]

PathLike = Union[str, os.PathLike]


def cache_dir() -> Path:
    """sj-bert's local cache: ``$SJ_BERT_CACHE``, default ``~/.cache/sj_bert``. It holds the
    zoo's joined checkpoints and the compiled CPU kernel; safe to delete at any time, it is
    rebuilt when next needed."""
    return Path(os.environ.get("SJ_BERT_CACHE", Path.home() / ".cache" / "sj_bert"))


def read_json(path: PathLike, what: Optional[str] = None):
    """The JSON value stored in ``path``.

    :param what: what the file is, for the error message (e.g. ``"zoo registry"``)
    :raises FileNotFoundError: naming the file when it does not exist
    :raises ValueError: naming the file, and the line and column, when it is not UTF-8 JSON
    """
    label = f"{what} {os.fspath(path)}" if what else os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{label} not found") from error
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{label} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "the file is damaged or truncated"
        ) from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{label} is not UTF-8 text (byte {error.start}); expected a JSON file") from error


def write_json(path: PathLike, obj) -> None:
    """Write JSON to a temporary name, then rename: readers never see half a file."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it into place."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):  # a full disk must not leave the half-written temporary behind
            os.remove(tmp)
        raise


def move_into(staging: PathLike, dest: PathLike, stale: Iterable[str] = ()) -> list[str]:
    """Move every file of ``staging`` into ``dest`` (each by an atomic rename), then remove
    ``staging``. ``stale`` names files of ``dest`` to remove first, when ``staging`` does not
    replace them: they would otherwise sit beside the new files. Returns the names moved."""
    staging, dest = os.fspath(staging), os.fspath(dest)
    names = sorted(os.listdir(staging))
    for name in stale:
        if name not in names and os.path.isfile(os.path.join(dest, name)):
            os.remove(os.path.join(dest, name))
    for name in names:
        target = os.path.join(dest, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
    os.rmdir(staging)
    return names
