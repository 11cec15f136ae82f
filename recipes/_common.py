"""What the recipe scripts share besides the package: argparse and Accelerate glue.

As transformers keeps its examples' helpers beside ``run_glue_no_trainer.py``, these live in
``recipes/`` and not in ``sj_bert``: the number types that make argparse name the flag in its
errors, the data flags every GLUE recipe takes, the accelerator (on CPU when there is no GPU)
and the command line that reproduces a run. The scripts import it as ``_common``: Python puts a
script's own folder first on ``sys.path``.
"""

from __future__ import annotations

import os
import shlex

import torch

from sj_bert import glue

__all__ = [
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "fraction",
    "add_data_args",
    "make_accelerator",
    "command_line",
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
fraction = _number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def add_data_args(parser, *, task_required: bool, eval_flags: bool = True, task_flag: bool = True) -> None:
    """The recipes' data flags, named as in transformers' ``run_glue_no_trainer.py``; ``eval_flags``
    adds ``--per_device_eval_batch_size`` and ``--max_eval_samples``, ``task_flag`` ``--task``."""
    if task_flag:
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


def add_storage_args(parser, *, loading: str) -> None:
    """``--delta_from_base [BASE]`` and ``--int8_spike_fed``: weights written as the zoo stores
    them (``docs/zoo_storage.md``); ``loading`` says what puts them back, for the help."""
    parser.add_argument("--delta_from_base", nargs="?", const="", default=None, metavar="BASE",
                        help="store only the tensors that differ from base model BASE (a folder or hub id; "
                             f"alone: the offline MiniLM), taking the others from it when {loading}")
    parser.add_argument("--int8_spike_fed", action="store_true",
                        help="store the spike-fed weight matrices (encoder Linears) as int8 codes and per-row "
                             f"float32 scales, dequantized to --dtype when {loading}")


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


def command_line(script: str, argv, accelerator) -> str:
    """The shell command that reproduces a run: ``python <script> ...`` or ``accelerate launch ...``."""
    from accelerate.utils import DistributedType

    launcher = ["python"]
    num_processes, mixed_precision = accelerator.num_processes, accelerator.mixed_precision
    plugin = getattr(accelerator.state, "dynamo_plugin", None)
    dynamo = getattr(getattr(plugin, "backend", None), "value", "NO").lower()
    if num_processes > 1 or mixed_precision != "no" or dynamo != "no":
        launcher = ["accelerate", "launch"]
        if accelerator.distributed_type == DistributedType.FSDP:
            launcher.append("--use_fsdp")
        elif num_processes > 1:
            launcher.append("--multi_gpu")
        launcher += ["--num_processes", str(num_processes), "--mixed_precision", mixed_precision]
        if dynamo != "no":
            launcher += ["--dynamo_backend", dynamo]
    return shlex.join([*launcher, script, *argv])
