"""Finding and loading a checkpoint: a zoo name, a local folder or a hub id.

:func:`locate` says where a name points (verifying a zoo checkpoint's files against the
registry and joining its parts); :func:`from_pretrained` loads the model from there.
:func:`resolve_checkpoint` and :func:`load_checkpoint` are what the recipes use for every
argument that takes a checkpoint (``--model_name_or_path``, ``--teacher``, ...): a zoo name
resolves as in :func:`locate`, anything else keeps its meaning (a folder, or a hub id left to
``from_pretrained``), and errors name the argument.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .cache import join_parts, sha256_file
from .delta import check_complete
from .registry import PretrainedRecord, load_registry, zoo_dir

__all__ = [
    "ChecksumError",
    "Located",
    "locate",
    "resolve",
    "resolve_checkpoint",
    "load_pretrained",
    "load_checkpoint",
    "from_pretrained",
]


class ChecksumError(RuntimeError):
    """A checkpoint file's bytes do not match the sha256 recorded in the registry."""


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
            return Located("folder", text, Path(_checked_folder(str(path), "local folder")))
        if path.exists():
            raise NotADirectoryError(f"{text} is a file; expected a checkpoint folder (save_pretrained output)")
        owner, _, repo = text.partition("/")
        if not explicit and owner and repo and "/" not in repo and not text.startswith((".", "~")):
            return Located("hub", text, _download(text, None, text))
        raise FileNotFoundError(f"checkpoint folder not found: {text}")
    records = load_registry()
    if text in records:
        if Path(text).is_dir():
            # e.g. a run trained with --output_dir sst2: say which one loads, and how to get the other
            warnings.warn(
                f"{text!r} is a zoo name and also a folder here; loading the zoo checkpoint "
                f"(write ./{text} for the folder)",
                UserWarning,
                stacklevel=3,
            )
        record = records[text]
        local = zoo_dir() / record.name
        if not all((local / f).is_file() for f in record.files):
            local = _download(record.hub_id, list(record.files), record.name, record.command)
        _verify(local, record)
        # a record with ``base`` gets its base model's tensors back here, as its parts are joined,
        # and one with ``quantized`` its int8 matrices dequantized
        return Located("zoo", text, join_parts(local, record.files, base=record.base, name=record.name,
                                               quantized=record.quantized))
    hint = f"; for the folder {text!r} here, write ./{text}" if Path(text).is_dir() else ""
    raise KeyError(
        f"{text!r} is not a zoo checkpoint; known checkpoints: {', '.join(sorted(records)) or '(none)'}. "
        f"A local folder is given as a path (./name), a hub id as owner/name{hint}"
    )


def resolve(name_or_path: Union[str, os.PathLike]) -> Path:
    """A verified local folder for a registry name, a local folder or a hub id (see :func:`locate`)."""
    return locate(name_or_path).path


def _download(repo_id: str, files: Optional[list[str]], name: str, command: str = "") -> Path:
    """``repo_id``'s ``files`` from the hub; ``command``: what trains the checkpoint again (a zoo
    record's), named in the error when the hub cannot be reached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=files))
    except Exception as error:  # offline, missing repository, ...
        rebuild = f"; to train it again instead: {command}" if command else ""
        raise FileNotFoundError(
            f"checkpoint {name!r} is not in this checkout and could not be downloaded from "
            f"the hub repository {repo_id!r} ({type(error).__name__}: {error}){rebuild}"
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

    A bi-encoder checkpoint (``model_type`` ``spiking_bert_bi_encoder``, trained with
    ``finetune.py --pair_encoding bi``) loads as :class:`~sj_bert.SpikingBertBiEncoder`: it
    takes each sentence of a pair tokenized alone, ``input_ids_a``/``attention_mask_a`` and ``_b``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # spiking_bert: registered by sj_bert

    located = locate(name_or_path)
    # errors name the folder after this: a local folder's name is its path already
    what = "checkpoint" if located.kind == "folder" else located.describe()
    model = load_pretrained(AutoModelForSequenceClassification, str(located.path), what, **{"dtype": torch.float32, **kwargs})
    model.tokenizer = load_pretrained(AutoTokenizer, str(located.path), what)
    model.source = located.describe()  # what was loaded, for messages (python -m sj_bert prints it)
    model.eval()
    return model


def resolve_checkpoint(name_or_path: Union[str, os.PathLike], what: str = "checkpoint") -> str:
    """A loadable path for a checkpoint argument, ``what`` (the flag) naming it in errors.

    A zoo name (a bare name in the registry) becomes its verified local folder, as
    :func:`locate` finds it; a local folder is returned once it holds a ``config.json``; a name
    that can only be a local path and is not a folder raises ``FileNotFoundError``; anything
    else (``org/name``, ``name``) is returned unchanged, left to the hub.
    """
    text = os.fspath(name_or_path)
    if not isinstance(name_or_path, os.PathLike) and not _is_path(text) and text in _zoo_names():
        return str(locate(text).path)
    return _checked_folder(text, what)


def _zoo_names() -> set:
    # no registry where $SJ_BERT_ZOO points: no zoo names, every other meaning stays
    try:
        return set(load_registry())
    except FileNotFoundError:
        return set()


def _checked_folder(path: str, what: str) -> str:
    """Return ``path`` if it is a local folder or may be a hub id; raise a clear error otherwise.

    A path that can only be local (absolute, starting with ``.``, or with more than one ``/``) and
    is not a folder raises ``FileNotFoundError``; ``org/name`` or ``name`` is left to the hub.
    """
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{what} {path} has no config.json; expected a checkpoint folder (save_pretrained output)")
        check_complete(Path(path), what)
        return path
    if os.path.exists(path):
        raise NotADirectoryError(f"{what} {path!r} is a file; expected a checkpoint folder (save_pretrained output)")
    if os.path.isabs(path) or path.startswith(".") or path.count("/") > 1 or os.sep != "/" and os.sep in path:
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def load_pretrained(loader, path: str, what: str, **kwargs):
    """``loader.from_pretrained(path, **kwargs)``; a hub failure, or a damaged file of a local
    folder (what the safetensors, JSON or UTF-8 readers raise), names ``what`` (the flag) and ``path``."""
    import json

    from safetensors import SafetensorError

    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as error:
        if os.path.isdir(path):
            raise
        raise OSError(f"{what} {path!r} is not a local folder and could not be loaded from the hub: {error}") from error
    except SafetensorError as error:
        weights = sorted(n for n in os.listdir(path) if n.endswith(".safetensors")) if os.path.isdir(path) else []
        raise ValueError(
            f"{what} {path}: the weights ({', '.join(weights) or 'model.safetensors'}) could not be read "
            f"({error}); the file is damaged or truncated"
        ) from error
    except Exception as error:
        # the JSON and UTF-8 readers' errors, and the tokenizers library's bare Exception for a
        # tokenizer.json it cannot parse
        if not (isinstance(error, (UnicodeDecodeError, json.JSONDecodeError)) or type(error) is Exception):
            raise
        raise ValueError(
            f"{what} {path}: a config or tokenizer file is not valid UTF-8 JSON ({error}); the file is damaged"
        ) from error


def load_checkpoint(name_or_path: Union[str, os.PathLike], what: str = "checkpoint", **model_kwargs):
    """``(tokenizer, model)`` of a sequence-classification checkpoint (a zoo name, a folder or a
    hub id, see :func:`resolve_checkpoint`): BERT or SNN-BERT (the Auto classes know
    ``spiking_bert`` once ``sj_bert`` is imported, as it is by this module). ``model_kwargs`` go
    to the model's ``from_pretrained`` (``attn_implementation="eager"``, ...)."""
    import transformers

    path = resolve_checkpoint(name_or_path, what)
    tokenizer = load_pretrained(transformers.AutoTokenizer, path, what)
    # float32 parameters whatever the stored dtype (transformers 5 would load fp16 zoo parts as fp16)
    model = load_pretrained(transformers.AutoModelForSequenceClassification, path, what,
                            **{"dtype": torch.float32, **model_kwargs})
    return tokenizer, model
