"""What the GLUE recipes share (``recipes/finetune.py``, ``evaluate.py``, ``energy.py``).

Checkpoint checks and loading, tokenization of a GLUE ``DatasetDict``, dev-set scoring that counts
every sample exactly once over any number of processes (``gather_for_metrics``), the energy report
on a few dev sentences, atomic JSON writes and the model card.
"""

from __future__ import annotations

import copy
import os
import shlex
from typing import Optional

import torch

from . import glue
from .files import move_into, read_json, write_json, write_text  # noqa: F401  (public here too)
from .modeling.configuration_spiking_bert import SPIKING_FIELDS as _SNN_FIELDS

__all__ = [
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "add_data_args",
    "make_accelerator",
    "resolve_checkpoint",
    "from_pretrained",
    "load_checkpoint",
    "checkpoint_task",
    "is_spiking",
    "label_mapping",
    "tokenize",
    "make_collator",
    "eval_dataloaders",
    "evaluate",
    "energy_on_dataset",
    "load_eval_data",
    "first_rows",
    "read_json",
    "write_json",
    "write_text",
    "command_line",
    "model_card",
]


def _number(kind, test, expected: str):
    """An argparse ``type``: ``kind(text)`` when ``test`` holds, else argparse's error naming the
    flag, e.g. ``argument --max_eval_samples: expected a positive integer, got '0'``."""
    import argparse

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    convert.__name__ = expected  # argparse names the type in some messages
    return convert


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0 and v != float("inf"), "a positive finite number")
non_negative_float = _number(float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def add_data_args(parser, *, task_required: bool, eval_flags: bool = True) -> None:
    """The recipes' data flags, named as in transformers' ``run_glue_no_trainer.py``; ``eval_flags``
    adds ``--per_device_eval_batch_size`` and ``--max_eval_samples``."""
    parser.add_argument(
        "--task_name", "--task", dest="task_name", required=task_required, default=None,
        help=f"GLUE task: {', '.join(glue.TASK_TO_KEYS)}",
    )
    parser.add_argument(
        "--data_dir", default=None,
        help="classic glue_data folder (the root or the task's folder); default: the hub's nyu-mll/glue",
    )
    parser.add_argument(
        "--max_length", type=positive_int, default=128, help="truncate (and with --pad_to_max_length pad) to this"
    )
    parser.add_argument("--pad_to_max_length", action="store_true", help="pad every sample to --max_length")
    if eval_flags:
        parser.add_argument("--per_device_eval_batch_size", type=positive_int, default=8)
        parser.add_argument(
            "--max_eval_samples", type=positive_int, default=None, help="score only the first N dev samples"
        )


def make_accelerator(cpu: bool = False, **kwargs):
    """``accelerate.Accelerator(**kwargs)``, on CPU when asked or when the machine has no accelerator.

    Without ``cpu=True`` accelerate treats the ranks torchrun starts on a machine without GPUs
    (``accelerate launch --multi_gpu``) as unrelated single-process runs; with it they form one
    gloo process group.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=cpu or not torch.accelerator.is_available(), **kwargs)
    if os.environ.get("MASTER_ADDR") and "WORLD_SIZE" not in os.environ and accelerator.num_processes == 1:
        # what `accelerate launch --cpu --num_processes N` does without mpirun and a hostfile
        accelerator.print(
            "warning: several processes were asked for but one was started; on CPU without MPI use "
            "`accelerate launch --config_file recipes/configs/multi_cpu.yaml --num_processes N`"
        )
    return accelerator


def resolve_checkpoint(path: str, what: str = "checkpoint") -> str:
    """Return ``path`` if it is a local folder or may be a hub id; raise a clear error otherwise.

    A path that can only be local (absolute, starting with ``.``, or with more than one ``/``) and
    is not a folder raises ``FileNotFoundError``; ``org/name`` or ``name`` is left to the hub.
    """
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{what} {path} has no config.json; expected a checkpoint folder (save_pretrained output)")
        return path
    if os.path.exists(path):
        raise NotADirectoryError(f"{what} {path!r} is a file; expected a checkpoint folder (save_pretrained output)")
    if os.path.isabs(path) or path.startswith(".") or path.count("/") > 1 or os.sep != "/" and os.sep in path:
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def from_pretrained(loader, path: str, what: str, **kwargs):
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


def load_checkpoint(path: str, what: str = "checkpoint"):
    """``(tokenizer, model)`` of a sequence-classification checkpoint: BERT or SNN-BERT (the Auto
    classes know ``spiking_bert`` once ``sj_bert`` is imported, as it is by this module)."""
    import transformers

    path = resolve_checkpoint(path, what)
    tokenizer = from_pretrained(transformers.AutoTokenizer, path, what)
    # float32 parameters whatever the stored dtype (transformers 5 would load fp16 zoo parts as fp16)
    model = from_pretrained(transformers.AutoModelForSequenceClassification, path, what, dtype=torch.float32)
    return tokenizer, model


def checkpoint_task(task: Optional[str], config) -> str:
    """``task`` if given, else the task the checkpoint was fine-tuned on (``config.finetuning_task``)."""
    task = task or getattr(config, "finetuning_task", None)
    if task is None:
        raise ValueError(f"the checkpoint does not record its task; pass --task_name ({', '.join(glue.TASK_TO_KEYS)})")
    return glue.check_task(task)


def is_spiking(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "spiking_bert"


def label_mapping(config, task: str) -> Optional[dict]:
    """Dataset label id -> model label id, when the model names the task's labels in another order."""
    names = glue.TASK_LABELS[task]
    label2id = {str(k).lower(): v for k, v in (getattr(config, "label2id", None) or {}).items()}
    if names is None or sorted(label2id) != sorted(names):
        return None
    mapping = {i: label2id[name] for i, name in enumerate(names)}
    return None if all(i == j for i, j in mapping.items()) else mapping


def tokenize(raw, task: str, tokenizer, max_length: int, pad_to_max_length: bool, label_to_id: Optional[dict] = None):
    """Tokenize every split of a GLUE ``DatasetDict``: ``input_ids``, ``attention_mask``, ... and ``labels``."""
    first, second = glue.TASK_TO_KEYS[task]
    padding = "max_length" if pad_to_max_length else False

    def preprocess(examples):
        texts = (examples[first],) if second is None else (examples[first], examples[second])
        # the mask always: a tokenizer may leave it out, and padded batches need it
        result = tokenizer(*texts, padding=padding, max_length=max_length, truncation=True, return_attention_mask=True)
        labels = examples["label"]
        result["labels"] = labels if label_to_id is None else [label_to_id.get(label, label) for label in labels]
        return result

    return raw.map(
        preprocess,
        batched=True,
        remove_columns=next(iter(raw.values())).column_names,
        desc="Running tokenizer on dataset",
    )


def make_collator(tokenizer, pad_to_max_length: bool, mixed_precision: str = "no"):
    from transformers import DataCollatorWithPadding, default_data_collator

    if pad_to_max_length:
        return default_data_collator
    # Tensor cores want lengths in multiples of 8 (16 for fp8).
    multiple = {"fp8": 16, "fp16": 8, "bf16": 8}.get(str(mixed_precision))
    if "attention_mask" not in tokenizer.model_input_names:
        # padding goes by model_input_names: the mask that tokenize() added must be padded too
        tokenizer = copy.copy(tokenizer)
        tokenizer.model_input_names = [*tokenizer.model_input_names, "attention_mask"]
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)


def eval_dataloaders(processed, splits, collate, batch_size: int) -> dict:
    from torch.utils.data import DataLoader

    # Own generators: building an iterator draws a seed, which must not move the global RNG
    # (resumed runs replay the global RNG from the checkpoint).
    return {
        split: DataLoader(
            processed[split], collate_fn=collate, batch_size=batch_size, generator=torch.Generator()
        )
        for split in splits
    }


@torch.no_grad()
def evaluate(model, dataloaders: dict, accelerator, task: str) -> dict:
    """Score each dev split; flat results as run_glue.py writes them.

    Keys: ``eval_<metric>`` and ``eval_samples`` per split, suffixed ``_mm`` for MNLI mismatched.
    ``gather_for_metrics`` drops the samples repeated to even out the last batch over processes,
    so every sample of the split counts exactly once.
    """
    regression = glue.is_regression(task)
    was_training = model.training
    model.eval()
    results = {}
    for split, dataloader in dataloaders.items():
        predictions, references = [], []
        for batch in dataloader:
            logits = model(**batch).logits
            predicted = logits.squeeze(-1) if regression else logits.argmax(dim=-1)
            predicted, labels = accelerator.gather_for_metrics((predicted, batch["labels"]))
            predictions.append(predicted.float().cpu() if regression else predicted.cpu())
            references.append(labels.cpu())
        predictions = torch.cat(predictions).numpy()
        references = torch.cat(references).numpy()
        suffix = glue.metric_suffix(split)
        metrics = glue.compute_metrics(task, predictions, references)
        results.update({f"eval_{name}{suffix}": value for name, value in metrics.items()})
        results[f"eval_samples{suffix}"] = int(len(references))
    model.train(was_training)
    return results


@torch.no_grad()
def energy_on_dataset(model, dataset, collate, num_samples: int):
    """``sj_bert.energy.energy_report`` of ``model`` on the first ``num_samples`` rows of a tokenized split."""
    from .energy import energy_report

    rows = [dataset[i] for i in range(min(num_samples, len(dataset)))]
    if not rows:
        raise ValueError("no samples to measure energy on")
    batch = collate([{k: v for k, v in row.items() if k != "labels"} for row in rows])
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return energy_report(model, **inputs)


def load_eval_data(task: str, data_dir: Optional[str], file: Optional[str], max_eval_samples: Optional[int]):
    """The dev split(s) of ``task`` (``--data_dir`` or the hub), or one labelled GLUE file as split ``file``."""
    import datasets

    if file is not None:
        raw = datasets.DatasetDict({"file": glue.read_glue_file(file, task, require_labels=True)})
    else:
        raw = glue.load_glue(task, data_dir, split="validation")
    return datasets.DatasetDict({split: first_rows(dataset, max_eval_samples) for split, dataset in raw.items()})


def first_rows(dataset, n: Optional[int]):
    """The first ``n`` rows of ``dataset`` (all of them when ``n`` is None or larger)."""
    return dataset if n is None else dataset.select(range(min(n, len(dataset))))


def command_line(script: str, argv, accelerator) -> str:
    """The shell command that reproduces a run: ``python <script> ...`` or ``accelerate launch ...``."""
    from accelerate.utils import DistributedType

    launcher = ["python"]
    num_processes, mixed_precision = accelerator.num_processes, accelerator.mixed_precision
    if num_processes > 1 or mixed_precision != "no":
        launcher = ["accelerate", "launch"]
        if accelerator.distributed_type == DistributedType.FSDP:
            launcher.append("--use_fsdp")
        elif num_processes > 1:
            launcher.append("--multi_gpu")
        launcher += ["--num_processes", str(num_processes), "--mixed_precision", mixed_precision]
    return shlex.join([*launcher, script, *argv])




def model_card(results: dict, config, base_model: str, energy_text: Optional[str] = None) -> str:
    """Markdown model card: front matter, dev metrics, architecture, the command line, energy.

    :param results: what finetune.py writes to ``all_results.json``
    :param base_model: the checkpoint fine-tuned from, as the card should name it (markdown)
    :param energy_text: ``EnergyReport.format()`` of a spiking model, shown as a table
    """
    task = results["task"]
    spiking = getattr(config, "model_type", None) == "spiking_bert"
    kind = f"SNN-BERT ({getattr(config, 'coding', '?')} coding)" if spiking else "BERT (ANN)"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "datasets:",
        f"- {glue.HUB_DATASET}",
        "tags:",
        "- sj-bert",
        f"- glue-{task}",
        *(["- spiking-neural-network"] if spiking else []),
        "---",
        "",
        f"# {kind} fine-tuned on GLUE {glue.task_to_dir(task)}",
        "",
        f"Fine-tuned from {base_model} with sj-bert's `recipes/finetune.py`.",
        "",
        "## GLUE dev results",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in results.items():
        if key.startswith("eval_"):
            name = key[len("eval_"):]
            name, shown = ("dev " + name, str(value)) if name.startswith("samples") else (name, f"{value:.4f}")
            lines.append(f"| {name} | {shown} |")
    lines += [
        "",
        f"Training samples: {results['train_samples']}, optimizer steps: {results['train_steps']}"
        + (" (MNLI: `_mm` = mismatched dev set)." if task == "mnli" else "."),
        "",
    ]
    if spiking:
        lines += ["## Architecture", "", "| setting | value |", "|---|---|"]
        lines += [f"| {name} | {getattr(config, name)} |" for name in _SNN_FIELDS if hasattr(config, name)]
        lines.append("")
    lines += ["## Reproduce", "", "```bash", results["command"], "```", ""]
    if energy_text:
        lines += [
            "## Energy",
            "",
            f"Measured with `sj_bert.energy.energy_report` on {results.get('energy_samples')} dev sentences.",
            "",
            "```",
            energy_text.rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)
