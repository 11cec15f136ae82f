"""The checkpoint zoo: a registry of frozen records, resolved offline first, then on the hub.

``from_pretrained(name_or_path)`` accepts

1. a registry name (``"sst2"``): files from ``zoo/<name>/`` when they are in the checkout,
   otherwise downloaded from the record's hub repository; every file is checked against
   the sha256 in the registry before anything is loaded. A bare name is always a registry
   name, even where a folder of that name exists: write a folder as a path;
2. a local folder written by ``save_pretrained``, given as a path: ``./sst2``, an absolute
   path, anything with a ``/``, or a ``pathlib.Path``;
3. a hub repository id, ``owner/name`` (downloaded with ``huggingface_hub``), when no local
   folder has that path.

Checkpoints stored as byte parts (``model.safetensors.part-NN``, which keep the repository's
files small) are joined once into the cache, :func:`cache_dir` (``$SJ_BERT_CACHE``, default
``~/.cache/sj_bert``), one folder per checkpoint content. The join records every joined
file's size and sha256; each later load compares sizes and modification times (cheap) and
hashes again only a file whose times changed. A cache file found missing, truncated or altered
is rebuilt from the verified parts, with a warning. Joins take a lock, so concurrent first
loads build the folder once.

The registry is ``zoo/registry.json`` beside the package (``SJ_BERT_ZOO`` overrides the
folder). ``zoo/README.md`` is generated from it by ``python -m sj_bert.zoo --write-table``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from .files import read_json, write_json

__all__ = [
    "PretrainedRecord",
    "ChecksumError",
    "Located",
    "zoo_dir",
    "cache_dir",
    "load_registry",
    "spiking_settings",
    "list_pretrained",
    "locate",
    "resolve",
    "from_pretrained",
    "sha256_file",
    "split_file",
    "join_parts",
    "results_table",
]


class ChecksumError(RuntimeError):
    """A checkpoint file's bytes do not match the sha256 recorded in the registry."""


@dataclass(frozen=True)
class PretrainedRecord:
    """One named checkpoint. ``files`` maps file name to sha256; ``metrics`` holds the GLUE
    dev metrics measured by ``recipes/evaluate.py``; ``baselines`` the ANN twin and the
    repeat-coding model trained the same way (``{"ann": {...}, "repeat": {...}}``)."""

    name: str
    task: str
    architecture: str
    labels: tuple[str, ...]
    coding: str
    neuron: str
    files: dict[str, str]
    metrics: dict[str, float]
    main_metric: str
    command: str
    hub_id: str
    license: str
    base_model: str
    device: str = ""
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    energy: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    @classmethod
    def from_dict(cls, data: dict, where: str = "registry") -> "PretrainedRecord":
        """The record of ``data``; ``where`` (the registry file) names the error when a field
        is missing or unknown."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a checkpoint record must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        name = data.get("name", "?")
        missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
        if missing or unknown:
            raise ValueError(
                f"{where}: checkpoint record {name!r} has "
                + "; ".join(part for part in (missing and f"missing field(s) {missing}",
                                              unknown and f"unknown field(s) {unknown}") if part)
            )
        data = dict(data)
        data["labels"] = tuple(data["labels"])
        return cls(**data)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"] = list(self.labels)
        return out


def zoo_dir() -> Path:
    """The zoo folder: ``$SJ_BERT_ZOO`` or ``zoo/`` at the root of this checkout."""
    return Path(os.environ.get("SJ_BERT_ZOO", Path(__file__).resolve().parents[1] / "zoo"))


def cache_dir() -> Path:
    """Where checkpoints stored as parts are joined: ``$SJ_BERT_CACHE``, default ``~/.cache/sj_bert``.
    Safe to delete at any time; it is rebuilt on the next load."""
    return Path(os.environ.get("SJ_BERT_CACHE", Path.home() / ".cache" / "sj_bert"))


def spiking_settings(name: str) -> dict:
    """The spiking settings (``SPIKING_FIELDS`` but the backend) of zoo checkpoint ``name``,
    read from its ``config.json``, which stays in the tree when its weight parts do not."""
    from .modeling.configuration_spiking_bert import SPIKING_FIELDS

    config = read_json(zoo_dir() / name / "config.json")
    return {key: config[key] for key in SPIKING_FIELDS if key in config and key != "neuron_backend"}


def load_registry(path: Optional[Path] = None) -> dict[str, PretrainedRecord]:
    path = Path(path) if path else zoo_dir() / "registry.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"zoo registry {path} not found; sj-bert's zoo ships with the source checkout "
            "(pip install -e .) or set SJ_BERT_ZOO to a folder holding registry.json"
        )
    data = read_json(path, "zoo registry")
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), list):
        raise ValueError(f"zoo registry {path}: expected an object with a list \"checkpoints\", got {str(data)[:80]}")
    return {r.name: r for r in (PretrainedRecord.from_dict(item, f"zoo registry {path}") for item in data["checkpoints"])}


def results_table(records: dict[str, PretrainedRecord]) -> str:
    """Markdown table: task, metric, ANN twin, SNN-BERT individual, repeat baseline, energy."""

    def metric(values: dict, key: str) -> str:
        return f"{100 * values[key]:.1f}" if key in values else "-"

    rows = [
        "| name | task | metric | ANN twin | SNN-BERT (individual) | repeat T=4 | energy / sample (SNN) | energy / sample (ANN) | in repo |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records.values():
        local = all((zoo_dir() / r.name / f).is_file() for f in r.files)
        energy = r.energy
        rows.append(
            f"| {r.name} | {r.task} | {r.main_metric} | {metric(r.baselines.get('ann', {}), r.main_metric)} "
            f"| {metric(r.metrics, r.main_metric)} | {metric(r.baselines.get('repeat', {}), r.main_metric)} "
            f"| {energy.get('snn_mj', float('nan')):.3f} mJ | {energy.get('ann_mj', float('nan')):.3f} mJ "
            f"| {'yes' if local else 'hub: ' + r.hub_id} |"
        )
    return "\n".join(rows)


def list_pretrained(print_table: bool = True) -> list[str]:
    """Names of the registered checkpoints; prints the results table by default."""
    records = load_registry()
    if print_table:
        print(results_table(records))
    return list(records)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(folder: Path, record: PretrainedRecord) -> None:
    for name, expected in record.files.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint {record.name!r}: file {name} is missing from {folder}; download it "
                f"with `huggingface-cli download {record.hub_id} {name} --local-dir {folder}` "
                "(needs network access)"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumError(
                f"checkpoint {record.name!r}: {path} has sha256 {actual}, the registry records "
                f"{expected}; the file is altered or truncated, refusing to load it"
            )


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


def _join_into(tmp: Path, folder: Path, parts: list[Path]) -> None:
    """Write the joined files of ``folder`` and its other files into ``tmp``, with their manifest."""
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
    write_json(tmp / CACHE_MANIFEST, {"files": {n: {"sha256": d, "stamp": _stamp(tmp / n)} for n, d in written.items()}})


def join_parts(folder: Path, digests: Optional[dict[str, str]] = None) -> Path:
    """A loadable folder for ``folder``: itself when it holds no ``*.part-NN`` files, else a
    folder of :func:`cache_dir`, keyed by the content of every file, where the parts are joined
    again and the other files copied. Call it after the parts are verified; ``digests`` (file
    name to sha256, as just verified) spares hashing them again.

    The cached folder is checked on every call (see :func:`_cache_problem`) and rebuilt, with a
    warning, when a file in it is missing or altered. Building happens under a lock in a
    temporary folder renamed into place, so concurrent callers all get the one complete folder."""
    folder = Path(folder)
    parts = sorted(p for p in folder.iterdir() if PART in p.name)
    if not parts:
        return folder
    if digests is None:
        digests = {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file()}
    key = hashlib.sha256("".join(f"{n}:{d};" for n, d in sorted(digests.items())).encode()).hexdigest()[:16]
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
            _join_into(tmp, folder, parts)
            try:
                os.replace(tmp, cache)
            except OSError:
                # another process (without a lock to wait on) finished first: its folder serves
                if not (cache.is_dir() and _cache_problem(cache) is None):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


@dataclass(frozen=True)
class Located:
    """Where :func:`locate` found a checkpoint: ``kind`` is ``"zoo"``, ``"folder"`` or ``"hub"``,
    ``name`` what was asked for, ``path`` the verified local folder to load."""

    kind: str
    name: str
    path: Path

    def describe(self) -> str:
        """How to name it to a user: ``zoo checkpoint 'sst2'``, ``local folder ./sst2``, ..."""
        return {"zoo": f"zoo checkpoint {self.name!r}", "folder": f"local folder {self.name}",
                "hub": f"hub repository {self.name}"}[self.kind]


def _is_path(text: str) -> bool:
    """Written as a path: absolute, starting with ``.`` or ``~``, or holding a separator."""
    return os.path.isabs(text) or text.startswith((".", "~")) or any(sep and sep in text for sep in (os.sep, os.altsep))


def locate(name_or_path: Union[str, os.PathLike]) -> Located:
    """A verified local folder for a registry name, a local folder or a hub id, and which it was.

    A bare name (no separator) is a registry name and nothing else, so a folder in the working
    directory never shadows a zoo checkpoint; a folder is given as a path (``./sst2``) or a
    ``pathlib.Path``; ``owner/name`` that is not a local folder is a hub id."""
    explicit = isinstance(name_or_path, os.PathLike)
    text = os.fspath(name_or_path)
    if explicit or _is_path(text):
        path = Path(text).expanduser()
        if path.is_dir():
            from .recipes_util import resolve_checkpoint

            return Located("folder", text, Path(resolve_checkpoint(str(path), "local folder")))
        if path.exists():
            raise NotADirectoryError(f"{text} is a file; expected a checkpoint folder (save_pretrained output)")
        owner, _, repo = text.partition("/")
        if not explicit and owner and repo and "/" not in repo and not text.startswith((".", "~")):
            return Located("hub", text, _download(text, None, text))
        raise FileNotFoundError(f"checkpoint folder not found: {text}")
    records = load_registry()
    if text in records:
        record = records[text]
        local = zoo_dir() / record.name
        if not all((local / f).is_file() for f in record.files):
            local = _download(record.hub_id, list(record.files), record.name)
        _verify(local, record)
        return Located("zoo", text, join_parts(local, record.files))
    hint = f"; for the folder {text!r} here, write ./{text}" if Path(text).is_dir() else ""
    raise KeyError(
        f"{text!r} is not a zoo checkpoint; known checkpoints: {', '.join(sorted(records)) or '(none)'}. "
        f"A local folder is given as a path (./name), a hub id as owner/name{hint}"
    )


def resolve(name_or_path: Union[str, os.PathLike]) -> Path:
    """A verified local folder for a registry name, a local folder or a hub id (see :func:`locate`)."""
    return locate(name_or_path).path


def _download(repo_id: str, files: Optional[list[str]], name: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=files))
    except Exception as error:  # offline, missing repository, ...
        raise FileNotFoundError(
            f"checkpoint {name!r} is not in this checkout and could not be downloaded from "
            f"the hub repository {repo_id!r} ({type(error).__name__}: {error})"
        ) from error


def from_pretrained(name_or_path: str, **kwargs):
    """Load a zoo checkpoint (name, folder or hub id, see :func:`locate`) as a ready-to-use model.

    ``model.source`` says what was loaded (``"zoo checkpoint 'sst2'"``). ``kwargs`` go to
    ``AutoModelForSequenceClassification.from_pretrained``. Parameters are float32 unless
    ``dtype`` says otherwise: the zoo stores fp16 to stay small, its metrics are measured in
    float32, and transformers 5 would otherwise load the stored dtype (4.x loads float32).
    The tokenizer is attached as ``model.tokenizer``::

        m = sj_bert.from_pretrained("sst2")
        logits = m(**m.tokenizer(["a gripping film"], return_tensors="pt")).logits  # [B, 2]
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # spiking_bert: registered by sj_bert

    from .recipes_util import from_pretrained as load

    located = locate(name_or_path)
    # errors name the folder after this: a local folder's name is its path already
    what = "checkpoint" if located.kind == "folder" else located.describe()
    model = load(AutoModelForSequenceClassification, str(located.path), what, **{"dtype": torch.float32, **kwargs})
    model.tokenizer = load(AutoTokenizer, str(located.path), what)
    model.source = located.describe()  # what was loaded, for messages (python -m sj_bert prints it)
    model.eval()
    return model


def _write_table() -> None:
    records = load_registry()
    readme = zoo_dir() / "README.md"
    text = readme.read_text()
    start, end = "<!-- table:start -->", "<!-- table:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{results_table(records)}\n{end}{tail}")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="sj-bert checkpoint zoo")
    parser.add_argument("--write-table", action="store_true", help="regenerate zoo/README.md's table")
    args = parser.parse_args(argv)
    if args.write_table:
        _write_table()
    else:
        list_pretrained()


if __name__ == "__main__":
    main()
