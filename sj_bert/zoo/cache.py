"""Checkpoints kept as byte parts, joined into a local cache.

Files over the repository's size limit are stored as ``<file>.part-00``, ``-01``, ... (see
:func:`split_file`). :func:`join_parts` joins them once into :func:`cache_dir`
(``$SJ_BERT_CACHE``, default ``~/.cache/sj_bert``), one folder per checkpoint content. The join
records every joined file's size and sha256; each later load compares sizes and modification
times (cheap) and hashes again only a file whose times changed. A cache file found missing,
truncated or altered is rebuilt from the verified parts, with a warning. Joins take a lock, so
concurrent first loads build the folder once. A checkpoint stored as what differs from its base
model (a record with ``base``) is completed with the base's tensors as it is joined (see
:mod:`sj_bert.zoo.delta`), and one whose spike-fed matrices are stored in int8 (a record with
``quantized``) has them dequantized (see :mod:`sj_bert.zoo.quantize`), so the cache holds its
complete weights, verified and rebuilt alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from ..files import cache_dir, read_json, write_json

if TYPE_CHECKING:
    from .registry import BaseWeights, QuantizedWeights

__all__ = ["PART", "CACHE_MANIFEST", "cache_dir", "sha256_file", "split_file", "store_weights", "complete_weights", "join_parts"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


PART = ".part-"


def split_file(path: Path, limit: int) -> list[Path]:
    """Cut ``path`` into ``path.part-00``, ``-01``, ... of at most ``limit`` bytes each and
    remove it: the zoo keeps every file in the repository small."""
    parts = []
    with open(path, "rb") as f:
        for index, chunk in enumerate(iter(lambda: f.read(limit), b"")):
            part = path.with_name(f"{path.name}{PART}{index:02d}")
            part.write_bytes(chunk)
            parts.append(part)
    path.unlink()
    return parts


CACHE_MANIFEST = ".sj_bert_cache.json"  # in each joined folder: what the join wrote


def _stamp(path: Path) -> list[int]:
    # size and both times: writing a file changes its mtime, and resetting the mtime (touch -d)
    # changes its ctime, so an edit in place shows here without reading the file
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_problem(cache: Path) -> Optional[str]:
    """What is wrong with a joined folder, or None when every file is as the join wrote it.

    Sizes and times are compared first; a file whose times changed is hashed again, and if its
    sha256 still matches, its new times are recorded so the next load is cheap again."""
    try:
        recorded = read_json(cache / CACHE_MANIFEST)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{CACHE_MANIFEST} is missing or unreadable"
    refreshed = False
    for name, entry in recorded.items():
        path = cache / name
        if not path.is_file():
            return f"{name} is missing"
        stamp = _stamp(path)
        if stamp[0] != entry["stamp"][0]:
            return f"{name} has {stamp[0]} bytes, {entry['stamp'][0]} when joined (truncated or altered)"
        if stamp != entry["stamp"]:
            if sha256_file(path) != entry["sha256"]:
                return f"{name} changed since it was joined (its sha256 differs)"
            entry["stamp"], refreshed = stamp, True
    if refreshed:
        with contextlib.suppress(OSError):  # a read-only cache is still served; it is re-hashed next time
            write_json(cache / CACHE_MANIFEST, {"files": recorded})
    return None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if needed); yields False where the platform
    has no ``fcntl`` or the file cannot be created (then concurrent joins fall back to accepting
    a complete folder)."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError:  # a read-only cache: nothing will be written to it, nothing to lock
        yield False
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def store_weights(path: Path, dtype: str, base_folder: Optional[Path] = None,
                  int8: bool = False) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Rewrite the weights file ``path`` (written in ``dtype``) as the zoo stores it, the inverse
    of :func:`complete_weights`: with ``base_folder`` without the tensors equal to that base's
    (:func:`~sj_bert.zoo.delta.strip_base`), then with ``int8`` the spike-fed matrices left in it
    as int8 codes and scales (:func:`~sj_bert.zoo.quantize.quantize_file`; a matrix left to the
    base comes back exactly, so it is not quantized). Returns what each step recorded: the
    tensors left to the base, and the keys quantized (empty where a step did nothing)."""
    from .delta import strip_base
    from .quantize import quantize_file

    shared = strip_base(path, base_folder, dtype) if base_folder is not None else {}
    return shared, quantize_file(path, dtype) if int8 else []


def complete_weights(folder: Path, base: Optional["BaseWeights"], quantized: Optional["QuantizedWeights"],
                     name: str) -> list[str]:
    """Complete, in ``folder``, weights stored as the zoo stores them: ``base``'s tensors put
    back (:func:`~sj_bert.zoo.delta.merge_base`), then ``quantized``'s int8 matrices dequantized
    (:func:`~sj_bert.zoo.quantize.dequantize_file`; the codes are in the stored file, the base's
    tensors never quantized). Either may be None. Returns the names of the files rewritten."""
    from .delta import merge_base
    from .quantize import dequantize_file

    rewritten = []
    if base is not None:
        merge_base(folder / base.file, base, name)
        rewritten.append(base.file)
    if quantized is not None:
        dequantize_file(folder / quantized.file, quantized, name)
        rewritten.append(quantized.file)
    return rewritten


def _join_into(tmp: Path, folder: Path, parts: list[Path], base: Optional["BaseWeights"],
               quantized: Optional["QuantizedWeights"], name: str) -> None:
    """Write the joined files of ``folder`` and its other files into ``tmp``, the weights
    completed with ``base``'s tensors and ``quantized``'s matrices dequantized when given, with
    their manifest."""
    tmp.mkdir(parents=True)
    written = {}
    for item in folder.iterdir():
        if PART not in item.name and item.is_file():
            shutil.copyfile(item, tmp / item.name)
            written[item.name] = sha256_file(tmp / item.name)
    for whole in sorted({p.name.split(PART)[0] for p in parts}):
        digest = hashlib.sha256()
        with open(tmp / whole, "wb") as out:
            for part in (p for p in parts if p.name.split(PART)[0] == whole):
                data = part.read_bytes()
                digest.update(data)
                out.write(data)
        written[whole] = digest.hexdigest()
    for completed in complete_weights(tmp, base, quantized, name):
        written[completed] = sha256_file(tmp / completed)  # the manifest records the complete file
    write_json(tmp / CACHE_MANIFEST, {"files": {n: {"sha256": d, "stamp": _stamp(tmp / n)} for n, d in written.items()}})


def join_parts(
    folder: Path, digests: Optional[dict[str, str]] = None, base: Optional["BaseWeights"] = None,
    name: Optional[str] = None, quantized: Optional["QuantizedWeights"] = None,
) -> Path:
    """A loadable folder for ``folder``: itself when it holds no ``*.part-NN`` files and takes
    nothing from a base model, else a folder of :func:`cache_dir`, keyed by the content of every
    file (and ``base``), where the parts are joined again, the other files copied and, with
    ``base`` (a record's :class:`~sj_bert.zoo.registry.BaseWeights`), the weights completed with
    the base's tensors; with ``quantized`` (a record's
    :class:`~sj_bert.zoo.registry.QuantizedWeights`) its int8 matrices dequantized. Call it after the parts are verified; ``digests`` (file name to sha256,
    as just verified) spares hashing them again. ``name`` names the checkpoint in errors
    (default: the folder's name).

    The cached folder is checked on every call (see :func:`_cache_problem`) and rebuilt, with a
    warning, when a file in it is missing or altered. Building happens under a lock in a
    temporary folder renamed into place, so concurrent callers all get the one complete folder."""
    folder = Path(folder)
    parts = sorted(p for p in folder.iterdir() if PART in p.name)
    if not parts and base is None and quantized is None:
        return folder
    if digests is None:
        digests = {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file()}
    content = "".join(f"{n}:{d};" for n, d in sorted(digests.items()))
    if base is not None:  # another base record is another complete file (none: the keys as before)
        content += json.dumps(asdict(base), sort_keys=True)
    if quantized is not None:  # likewise: dequantized to another dtype is another file
        content += json.dumps({"quantized": asdict(quantized)}, sort_keys=True)
    key = hashlib.sha256(content.encode()).hexdigest()[:16]
    cache = cache_dir() / f"{folder.name}-{key}"
    with _lock(cache.with_name(f".{cache.name}.lock")) as locked:
        if cache.is_dir():
            problem = _cache_problem(cache)
            if problem is None:
                return cache
            warnings.warn(f"zoo cache {cache}: {problem}; rebuilding it from {folder}", UserWarning, stacklevel=2)
            trash = cache.with_name(f".{cache.name}.bad-{os.getpid()}-{os.urandom(4).hex()}")
            os.replace(cache, trash)
            shutil.rmtree(trash)
        if locked:  # under the lock no other join is running: these are left by killed ones
            for stale in [*cache.parent.glob(f".{cache.name}.tmp-*"), *cache.parent.glob(f".{cache.name}.bad-*")]:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            _join_into(tmp, folder, parts, base, quantized, name or folder.name)
            try:
                os.replace(tmp, cache)
            except OSError:
                # another process (without a lock to wait on) finished first: its folder serves
                if not (cache.is_dir() and _cache_problem(cache) is None):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache
