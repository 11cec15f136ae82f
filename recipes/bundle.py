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

Parts and the unpacked folder are written under temporary names and renamed when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import _common
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


def _weights_bytes(path: Path, dtype: torch.dtype) -> bytes:
    """``path``'s tensors, floating ones cast to ``dtype``, as safetensors bytes."""
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(path).items()}
    with tempfile.TemporaryDirectory() as tmp:
        save_file(tensors, os.path.join(tmp, WEIGHTS), metadata={"format": "pt"})
        return Path(tmp, WEIGHTS).read_bytes()


def pack(run_dir: Path, prefix: Path, part_mib: float, dtype: str) -> list[Path]:
    """Write ``run_dir``'s top-level files as ``<prefix>.tar.part-NN``; returns the parts."""
    if not (run_dir / WEIGHTS).is_file():
        shards = sorted(p.name for p in run_dir.glob("model-*.safetensors"))
        raise FileNotFoundError(
            f"{run_dir}: no {WEIGHTS} to pack"
            + (f" (sharded weights {shards[:2]}... are not supported)" if shards else "; is it a finished finetune.py run?")
        )
    if part_paths(prefix):
        raise FileExistsError(f"{prefix}{PART}* exist already: pack into another prefix or remove them")
    files = {}
    for path in sorted(p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        files[path.name] = _weights_bytes(path, DTYPES[dtype]) if path.name == WEIGHTS else path.read_bytes()
    manifest = {"source": str(run_dir), "dtype": dtype, "files": {name: _sha256(data) for name, data in files.items()}}
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
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
    unpacking = verbs.add_parser("unpack", help="<prefix>.tar.part-NN -> a run folder")
    unpacking.add_argument("prefix", type=Path)
    unpacking.add_argument("dest", type=Path, help="the folder to write (new, or empty)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.verb == "pack":
        parts = pack(args.run_dir, args.prefix, args.part_mib, args.dtype)
        print(f"packed {args.run_dir} into {len(parts)} part(s): " + ", ".join(
            f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in parts))
        return parts
    manifest = unpack(args.prefix, args.dest)
    print(f"unpacked {len(manifest['files'])} files ({manifest['dtype']} weights) from {manifest['source']} into {args.dest}")
    return manifest


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as error:
        sys.exit(f"bundle.py: {error}")
