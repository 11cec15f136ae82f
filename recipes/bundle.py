#!/usr/bin/env python
"""Carry a finished ``finetune.py`` run folder through a channel that takes a few small files.

A GPU lease (the ``device`` tool) brings back at most 8 files of at most 16 MiB from ``$OUT``,
and a run's folder is more files than that (weights, config, tokenizer, results, card) with
weights of 91 MB in fp32. ``pack`` writes the folder's top-level files (the checkpoints
``step_N``/``epoch_N`` stay behind) as one tar, the weights cast to ``--dtype`` (fp16 by
default, as ``publish.py`` stores them: 45 MB for MiniLM-L6), cut into numbered parts of at most
``--part_mib`` MiB. ``unpack`` joins the parts, checks every file against the sha256 the tar's
``BUNDLE.json`` lists, and writes the folder again, ready for ``evaluate.py`` or
``publish.py --checkpoint``::

    python recipes/bundle.py pack /tmp/runs/sst2/individual $OUT/sst2_individual   # .tar.part-00, -01, ...
    python recipes/bundle.py unpack gpu/sst2_individual /tmp/gpu/sst2_individual

``pack --delta_from_base [BASE] --int8_spike_fed`` carries the weights as the zoo stores them
(``docs/zoo_storage.md``): without the tensors bit-identical to the base model's (a run trained
with ``finetune.py --freeze_embeddings``; BASE defaults to the offline MiniLM) and with the
spike-fed matrices as int8 codes and per-row scales. A MiniLM-L6 SNN-BERT run is then one part
of about 12 MB instead of three, so one lease call (64 MiB) brings back five task checkpoints.
``BUNDLE.json`` records both (the base's tensors by sha256), and ``unpack`` completes the
weights as a zoo load does: the base's tensors put back, the matrices dequantized to
``--dtype``. The unpacked folder is an ordinary checkpoint whose spike-fed matrices carry the
int8 rounding; ``publish.py --int8_spike_fed`` quantizes them to the same codes again.

Parts and the unpacked folder are written under temporary names and renamed when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

import _common
import sj_bert
from sj_bert import zoo
from sj_bert.files import write_bytes

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
WEIGHTS = "model.safetensors"
MANIFEST = "BUNDLE.json"
PART = ".tar.part-"


def part_paths(prefix: Path) -> list[Path]:
    """The parts written for ``prefix``, in order: ``<prefix>.tar.part-00``, ``-01``, ..."""
    found = sorted(prefix.parent.glob(f"{prefix.name}{PART}*"))
    return [p for p in found if p.name[len(prefix.name) + len(PART):].isdigit()]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weights_bytes(path: Path, dtype: str, base: Optional[str] = None, int8: bool = False) -> tuple[bytes, dict]:
    """``path``'s tensors, floating ones cast to ``dtype``, as safetensors bytes; with ``base``
    (a base model's folder or hub id, "" the offline MiniLM) without the tensors equal to its,
    with ``int8`` the spike-fed matrices as int8 codes and scales. Also returns what
    ``BUNDLE.json`` records of that: ``{"base": ..., "quantized": ...}``, each the zoo record's
    entry as a dict, present only when something was left out or quantized."""
    tensors = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in load_file(path).items()}
    stored = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp, WEIGHTS)
        save_file(tensors, weights, metadata={"format": "pt"})
        folder, source = zoo.base_source(base or sj_bert.offline_bert()) if base is not None else (None, {})
        shared, quantized = zoo.store_weights(weights, dtype, folder, int8)
        if shared:
            stored["base"] = dataclasses.asdict(zoo.BaseWeights(dtype=dtype, tensors=shared, **source))
        if quantized:
            stored["quantized"] = dataclasses.asdict(
                zoo.QuantizedWeights(scheme=zoo.INT8_SCHEME, dtype=dtype, tensors=tuple(quantized)))
        return weights.read_bytes(), stored


def pack(run_dir: Path, prefix: Path, part_mib: float, dtype: str, base: Optional[str] = None,
         int8: bool = False) -> list[Path]:
    """Write ``run_dir``'s top-level files as ``<prefix>.tar.part-NN``; returns the parts.
    ``base`` and ``int8``: as :func:`_weights_bytes` (``None``, ``False``: every tensor, in
    ``dtype``)."""
    if not (run_dir / WEIGHTS).is_file():
        shards = sorted(p.name for p in run_dir.glob("model-*.safetensors"))
        raise FileNotFoundError(
            f"{run_dir}: no {WEIGHTS} to pack"
            + (f" (sharded weights {shards[:2]}... are not supported)" if shards else "; is it a finished finetune.py run?")
        )
    if part_paths(prefix):
        raise FileExistsError(f"{prefix}{PART}* exist already: pack into another prefix or remove them")
    files, stored = {}, {}
    for path in sorted(p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name == WEIGHTS:
            files[path.name], stored = _weights_bytes(path, dtype, base, int8)
        else:
            files[path.name] = path.read_bytes()
    if base is not None and "base" not in stored:
        print(f"--delta_from_base: no tensor of {run_dir} equals the base's in {dtype} (trained without "
              "finetune.py --freeze_embeddings?); packing every tensor")
    manifest = {"source": str(run_dir), "dtype": dtype, "files": {name: _sha256(data) for name, data in files.items()},
                **stored}
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    blob, size = stream.getvalue(), int(part_mib * 2**20)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, start in enumerate(range(0, len(blob), size)):
        part = prefix.with_name(f"{prefix.name}{PART}{index:02d}")
        write_bytes(part, blob[start:start + size])
        parts.append(part)
    return parts


def unpack(prefix: Path, dest: Path) -> dict:
    """Join ``<prefix>.tar.part-NN``, check every file's sha256, write them into ``dest``;
    returns the bundle's manifest."""
    parts = part_paths(prefix)
    if not parts:
        raise FileNotFoundError(f"no parts {prefix}{PART}00, ... to unpack")
    numbers = [int(p.name.rsplit("-", 1)[1]) for p in parts]
    if numbers != list(range(len(parts))):
        raise ValueError(f"{prefix}{PART}*: parts {numbers} are not 00 to {len(parts) - 1:02d} without a gap")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty: unpack into a new folder")
    blob = b"".join(p.read_bytes() for p in parts)
    names = ", ".join(p.name for p in parts)
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            members = {m.name: m for m in tar.getmembers()}
            bad = [n for n, m in members.items() if not m.isfile() or "/" in n or n.startswith(".")]
            if bad or MANIFEST not in members:
                raise ValueError(f"{names}: not a bundle ({'unexpected entries ' + str(bad) if bad else 'no ' + MANIFEST})")
            files = {name: tar.extractfile(member).read() for name, member in members.items()}
    except tarfile.TarError as error:
        raise ValueError(f"{names}: the joined parts are not a whole tar ({error}); is a part missing or cut?") from error
    manifest = json.loads(files.pop(MANIFEST))
    if set(files) != set(manifest["files"]):
        raise ValueError(f"{names}: holds {sorted(files)}, its {MANIFEST} lists {sorted(manifest['files'])}")
    for name, data in files.items():
        if _sha256(data) != manifest["files"][name]:
            raise ValueError(f"{names}: {name} does not match its sha256 in {MANIFEST}; a part is damaged")
    where = f"{names}: {MANIFEST}"
    base = zoo.BaseWeights.from_dict(manifest["base"], where) if "base" in manifest else None
    quantized = zoo.QuantizedWeights.from_dict(manifest["quantized"], where) if "quantized" in manifest else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        zoo.complete_weights(staging, base, quantized, str(prefix))  # as a zoo load completes them
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a full disk leaves no half-written folder behind
        raise
    return manifest


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    packing = verbs.add_parser("pack", help="a run folder -> <prefix>.tar.part-NN")
    packing.add_argument("run_dir", type=Path, help="a finished finetune.py --output_dir")
    packing.add_argument("prefix", type=Path, help="the parts' path before .tar.part-NN")
    packing.add_argument("--part_mib", type=_common.positive_float, default=15.0,
                         help="largest part in MiB (the device tool brings back files of at most 16 MiB)")
    packing.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="the weights' floating dtype")
    _common.add_storage_args(packing, loading="unpacked")
    unpacking = verbs.add_parser("unpack", help="<prefix>.tar.part-NN -> a run folder")
    unpacking.add_argument("prefix", type=Path)
    unpacking.add_argument("dest", type=Path, help="the folder to write (new, or empty)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.verb == "pack":
        parts = pack(args.run_dir, args.prefix, args.part_mib, args.dtype, args.delta_from_base, args.int8_spike_fed)
        print(f"packed {args.run_dir} into {len(parts)} part(s): " + ", ".join(
            f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in parts))
        return parts
    manifest = unpack(args.prefix, args.dest)
    completed = [f"{len(manifest['base']['tensors'])} tensors from the base model" if "base" in manifest else "",
                 f"{len(manifest['quantized']['tensors'])} matrices from int8" if "quantized" in manifest else ""]
    print(f"unpacked {len(manifest['files'])} files ({manifest['dtype']} weights"
          + "".join(f"; {c}" for c in completed if c) + f") from {manifest['source']} into {args.dest}")
    return manifest


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, ImportError, zoo.BaseModelError) as error:  # ImportError: no offline MiniLM
        sys.exit(f"bundle.py: {error}")
