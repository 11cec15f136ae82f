"""The checkpoint zoo: a registry of frozen records, resolved offline first, then on the hub.

``from_pretrained(name_or_path)`` accepts

1. a registry name (``"sst2"``): files from ``zoo/<name>/`` when they are in the checkout,
   otherwise downloaded from the record's hub repository; every file is checked against
   the sha256 in the registry before anything is loaded;
2. a local folder written by ``save_pretrained``;
3. a hub repository id (downloaded with ``huggingface_hub``).

The registry is ``zoo/registry.json`` beside the package (``SJ_BERT_ZOO`` overrides the
folder). ``zoo/README.md`` is generated from it by ``python -m sj_bert.zoo --write-table``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

__all__ = [
    "PretrainedRecord",
    "ChecksumError",
    "zoo_dir",
    "load_registry",
    "list_pretrained",
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
    def from_dict(cls, data: dict) -> "PretrainedRecord":
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


def load_registry(path: Optional[Path] = None) -> dict[str, PretrainedRecord]:
    path = Path(path) if path else zoo_dir() / "registry.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"zoo registry {path} not found; sj-bert's zoo ships with the source checkout "
            "(pip install -e .) or set SJ_BERT_ZOO to a folder holding registry.json"
        )
    records = json.loads(path.read_text())["checkpoints"]
    return {r["name"]: PretrainedRecord.from_dict(r) for r in records}


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


def join_parts(folder: Path, digests: Optional[dict[str, str]] = None) -> Path:
    """A loadable folder for ``folder``: itself when it holds no ``*.part-NN`` files, else a
    cache folder, keyed by the content of every file, where the parts are joined again and
    the other files copied. Call it after the parts are verified; ``digests`` (file name to
    sha256, as just verified) spares hashing them again."""
    folder = Path(folder)
    parts = sorted(p for p in folder.iterdir() if PART in p.name)
    if not parts:
        return folder
    if digests is None:
        digests = {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file()}
    key = hashlib.sha256("".join(f"{n}:{d};" for n, d in sorted(digests.items())).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("SJ_BERT_CACHE", Path.home() / ".cache" / "sj_bert")) / f"{folder.name}-{key}"
    if cache.is_dir():
        return cache
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if PART not in item.name and item.is_file():
            (tmp / item.name).write_bytes(item.read_bytes())
    for whole in sorted({p.name.split(PART)[0] for p in parts}):
        with open(tmp / whole, "wb") as out:
            for part in (p for p in parts if p.name.split(PART)[0] == whole):
                out.write(part.read_bytes())
    os.replace(tmp, cache)
    return cache


def resolve(name_or_path: str) -> Path:
    """A verified local folder for a registry name, a local folder or a hub id."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    records = load_registry()
    if name_or_path in records:
        record = records[name_or_path]
        local = zoo_dir() / record.name
        if not all((local / f).is_file() for f in record.files):
            local = _download(record.hub_id, list(record.files), record.name)
        _verify(local, record)
        return join_parts(local, record.files)
    if "/" in name_or_path and not path.exists():
        return _download(name_or_path, None, name_or_path)
    known = ", ".join(sorted(records))
    raise KeyError(
        f"{name_or_path!r} is neither a zoo checkpoint, a local folder nor a hub id "
        f"(owner/name); known checkpoints: {known}"
    )


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
    """Load a zoo checkpoint (name, folder or hub id) as a ready-to-use model.

    ``kwargs`` go to ``AutoModelForSequenceClassification.from_pretrained``. Parameters are
    float32 unless ``dtype`` says otherwise: the zoo stores fp16 to stay small, its metrics
    are measured in float32, and transformers 5 would otherwise load the stored dtype (4.x
    loads float32). The tokenizer is attached as ``model.tokenizer``::

        m = sj_bert.from_pretrained("sst2")
        logits = m(**m.tokenizer(["a gripping film"], return_tensors="pt")).logits  # [B, 2]
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # spiking_bert: registered by sj_bert

    folder = resolve(name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(folder, **{"dtype": torch.float32, **kwargs})
    model.tokenizer = AutoTokenizer.from_pretrained(folder)
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
