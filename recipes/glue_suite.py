#!/usr/bin/env python
"""Train the GLUE table: for each task, the ANN twin, SNN-BERT and the repeat-coding baseline
with the same budget, then one results table (markdown and JSON).

    python recipes/glue_suite.py --data_dir ../shared/data/glue --output_dir outputs/glue
    python recipes/glue_suite.py --data_dir /tmp/glue --output_dir outputs/glue \\
        --launcher "accelerate launch --config_file recipes/configs/single_gpu.yaml"
    python recipes/glue_suite.py --smoke --data_dir ../shared/data/glue --output_dir /tmp/glue-smoke

Every run is ``recipes/finetune.py`` in its own process, in ``<output_dir>/<task>/<model>``:

- ``ann``: ``--coding ann`` (BERT, the teacher and twin);
- ``individual``: SNN-BERT, individual coding, with the recipe's defaults for a model built
  from BERT (``finetune.INDIVIDUAL_DEFAULTS``: the best settings of the SST-2 accuracy work);
- ``repeat``: the baseline, LIF over ``--time_steps 4`` copies of each token, with the same
  threshold and pooling.

``--variant "NAME: FLAGS"`` (repeatable) adds an SNN-BERT run per task, ``individual-NAME``,
with ``FLAGS`` after everything the ``individual`` run gets (``--individual_flags`` included), so
a flag given again there wins; ``{twin}`` in ``FLAGS`` stands for the task's ANN twin's folder.
That is how one call compares levers against the current best, e.g.
``--variant "kd: --teacher {twin} --num_train_epochs 1"``. Each variant is a column of the table,
and every SNN-BERT run gets a row of a second table (firing rate, energy).

``--snn_from_twin`` builds each task's SNN-BERT from that task's fine-tuned ANN twin
(``<output_dir>/<task>/ann``) instead of from BERT: two stages, the twin first (the lever
``from_twin`` of ``docs/accuracy.md``). ``--distil_from_twin`` makes that twin SNN-BERT's
teacher (``finetune.py --teacher``; the terms beyond its logits come with
``--individual_flags``, e.g. ``"--kd_attention_weight 1"``). ``--individual_flags`` adds flags
to the SNN-BERT runs only (e.g. ``"--learnable_threshold"``). ``--repeat_from_twin`` builds the
repeat-coding baseline from the twin too, so that both spiking models have the same two stages
(GPU batch 2: from the same twin and epoch, repeat coding reached 82.5 on SST-2 against
SNN-BERT's 82.6 and 83.8).

``--pair_encoding bi`` trains every model of a pair task (MRPC, STS-B, RTE, WNLI, ...) as a
bi-encoder (``finetune.py --pair_encoding bi``: each sentence encoded alone, then compared; the
single-sentence tasks are unchanged), the ANN twin included, so each table row compares like with
like; the table's notes name the tasks it applied to.

It resumes where it stopped: a run whose ``all_results.json`` exists (and was not cut by the
budget) is done and is not run again; an unfinished one continues from its last checkpoint
(``--checkpointing_steps epoch --resume_from_checkpoint latest``), so a run cut short by a GPU
lease continues in the next one.

``--jobs N`` runs up to N of them at once on the same device(s): a run waits only for its own
task's twin when it starts from it or learns from it. One MiniLM run keeps an H100/H200 mostly
waiting on the host (GPU batch 2 of ``docs/accuracy.md``, an H200: SST-2 runs alone trained at
15-16 steps/s in bf16, two side by side at 14-18 each in fp32), so two at once train about
twice as much in a lease. With ``--jobs`` above 1 each run's output goes to its log only; the
console gets a line as it starts and ends.

``--minutes M`` is the suite's wall-clock budget, for a lease that ends at a known time: each run
gets what is left, less :data:`FINISH_RESERVE_S` to start up and to save, score and measure at
the end, as ``finetune.py --max_minutes`` (which stops training cleanly when it is spent and
records ``stopped_early``: such a run is marked in the table, and continued by a later call
from the step checkpoint it saved); a run that cannot get :data:`RUN_START_MIN_S` is not
started, and the table's notes say so. ``--results_dir DIR`` receives, after every run, what a
session keeps: each run's ``all_results.json`` (as ``<task>_<model>.json``), the tail of its
output (``<task>_<model>.log``) and the tables; no weights or checkpoints, those stay in
``--output_dir`` (each run's whole output too, in ``<output_dir>/<task>/<model>.log``).

Tasks without train data in ``--data_dir`` are skipped with the reason (QNLI and MNLI ship dev
sets only here, QQP is missing); without ``--data_dir`` the hub's GLUE is used.

The table gives each task's official metric (:data:`sj_bert.glue.MAIN_METRIC`) for the three
models and their average over the tasks that have all three, the SNN's firing rate, energy
per sample (SNN, repeat, ANN) and the ANN/SNN energy ratio, all taken from the runs'
``all_results.json``; ``glue_results.json`` holds those summaries and the exact commands.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Optional

import _common
from sj_bert import glue
from sj_bert.files import read_json, write_json, write_text

HERE = Path(__file__).resolve().parent
# --minutes: each run's --max_minutes keeps back this much for what its budget does not cover
# (importing before finetune.py's clock starts; saving, scoring and the energy report after it)
FINISH_RESERVE_S = 45.0
# ... and a run starts only with this much left: the reserve, loading and tokenizing, and a minute
# of training at least (a run of a few steps would only be a number without meaning)
RUN_START_MIN_S = 150.0
# The clock --minutes is measured on: a module attribute, so the tests can move it forward.
wall_clock = time.monotonic
LOG_TAIL_BYTES = 30_000  # the end of a run's output copied to --results_dir: its results or its traceback
TABLE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")  # the tasks with train data offline
OPTIONAL_TASKS = ("qnli", "mnli", "qqp")
# flags of each model beyond the shared budget; the individual model's spiking settings are
# finetune.py's defaults for an SNN-BERT built from BERT, so they live there only
MODELS = {
    "ann": ["--coding", "ann", "--learning_rate", "5e-5"],
    "individual": ["--coding", "individual", "--learning_rate", "1e-4"],
    "repeat": ["--coding", "repeat", "--time_steps", "4", "--learning_rate", "1e-4", "--v_threshold", "0.25",
               "--pooling", "mean"],
}
VARIANT_NAME = re.compile(r"[a-z0-9_]+")
TWIN = "{twin}"  # in a --variant's flags: the task's ANN twin's folder
SMOKE = ["--max_train_steps", "2", "--max_train_samples", "16", "--max_eval_samples", "16", "--max_length", "32",
         "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--energy_samples", "4", "--cpu"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=None, help="classic glue_data folder (default: the hub's GLUE)")
    parser.add_argument("--output_dir", required=True, help="one folder per task and model, and the tables")
    parser.add_argument("--tasks", nargs="+", default=list(TABLE_TASKS + OPTIONAL_TASKS),
                        help=f"default: {' '.join(TABLE_TASKS + OPTIONAL_TASKS)} (those without train data are skipped)")
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--model_name_or_path", default=None, help="BERT to start from (default: the offline MiniLM)")
    parser.add_argument("--num_train_epochs", type=int, default=3)
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launcher", default=f"{shlex.quote(sys.executable)}",
                        help='how finetune.py is started, e.g. "accelerate launch --multi_gpu" (default: this python)')
    parser.add_argument("--smoke", action="store_true",
                        help="2 steps on 16 samples per run, on the CPU: checks the whole path in minutes")
    parser.add_argument("--snn_from_twin", action="store_true",
                        help="build each task's SNN-BERT from its fine-tuned ANN twin (trained first, same folder)")
    parser.add_argument("--repeat_from_twin", action="store_true",
                        help="build each task's repeat-coding baseline from its ANN twin as well: both spiking "
                             "models get the same two stages")
    parser.add_argument("--distil_from_twin", action="store_true",
                        help="distil each task's SNN-BERT from its fine-tuned ANN twin (finetune.py --teacher)")
    parser.add_argument("--pair_encoding", choices=glue.PAIR_ENCODINGS, default="cross",
                        help="how every run of a pair task reads its two sentences (finetune.py --pair_encoding): "
                             "cross (default), or bi: bi-encoders, each sentence encoded alone; single-sentence "
                             "tasks are unaffected")
    parser.add_argument("--individual_flags", default="",
                        help='finetune.py flags for the SNN-BERT runs only, one string, e.g. "--learnable_threshold"')
    parser.add_argument("--variant", action="append", default=[], metavar='"NAME: FLAGS"',
                        help='one more SNN-BERT run per task, individual-NAME, with FLAGS after the individual '
                             'run\'s ({twin}: the ANN twin\'s folder), e.g. "kd: --teacher {twin}"; repeatable')
    parser.add_argument("--jobs", type=_common.positive_int, default=1,
                        help="runs at once (default 1); a run that starts from or learns from its task's twin "
                             "waits for it. Two MiniLM runs share one GPU at about twice the throughput of one")
    parser.add_argument("--results", default=None,
                        help="also write the JSON table here (e.g. bench/results/glue_suite_cuda.json)")
    parser.add_argument("--minutes", type=_common.non_negative_float, default=None,
                        help="wall-clock budget of the whole suite: each run gets what is left (finetune.py "
                             "--max_minutes), a run that cannot start in time is skipped and named")
    parser.add_argument("--results_dir", default=None,
                        help="after every run, copy its all_results.json and output tail, and the tables, here "
                             "(small files only: the weights and checkpoints stay in --output_dir)")
    # argparse reads a lone value that starts with "--" (--individual_flags "--learnable_threshold")
    # as a flag of its own and fails: the value is attached to its flag first
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, flag in enumerate(argv[:-1]):
        if flag == "--individual_flags":
            argv[i : i + 2] = [f"--individual_flags={argv[i + 1]}"]
            break
    args, extra = parser.parse_known_args(argv)
    args.tasks = [glue.check_task(t) for t in args.tasks]
    for flag in ("num_train_epochs", "per_device_train_batch_size", "max_length"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    args.finetune_flags = extra  # anything else goes to every finetune.py run
    if args.minutes is not None and any(flag.startswith("--max_minutes") for flag in extra):
        parser.error("--minutes sets each run's --max_minutes from the time left; pass one or the other")
    if args.results_dir and Path(args.results_dir).resolve() == Path(args.output_dir).resolve():
        parser.error("--results_dir must not be --output_dir: it is for the results only, without the weights")
    args.individual_flags = shlex.split(args.individual_flags)
    args.variants = {}
    for given in args.variant:
        name, colon, flags = given.partition(":")
        name = name.strip()
        if not colon or not VARIANT_NAME.fullmatch(name):
            parser.error(f'--variant: expected "NAME: FLAGS" with NAME of a-z, 0-9 and _, got {given!r}')
        if f"individual-{name}" in args.variants:
            parser.error(f"--variant: {name!r} is given twice")
        args.variants[f"individual-{name}"] = shlex.split(flags)
    snn_runs = (["individual"] if "individual" in args.models else []) + list(args.variants)
    for flag, sets, what in (("snn_from_twin", "--model_name_or_path", "builds SNN-BERT from"),
                             ("distil_from_twin", "--teacher", "distils SNN-BERT from")):
        if not getattr(args, flag):
            continue
        if not snn_runs or "ann" not in args.models:
            parser.error(f"--{flag} {what} the ANN twin: --models must hold ann, and individual or a --variant")
        for run in snn_runs:
            if any(f == sets or f.startswith(sets + "=") for f in snn_flags(args, run)):
                parser.error(f"--{flag} sets the SNN-BERT runs' {sets} (the twin's folder); {run} sets it too")
    if args.repeat_from_twin and not {"ann", "repeat"} <= set(args.models):
        parser.error("--repeat_from_twin builds the repeat baseline from the ANN twin: --models must hold ann and repeat")
    if "ann" not in args.models and any(TWIN in f for flags in args.variants.values() for f in flags):
        parser.error(f"--variant: {TWIN} is the ANN twin's folder, and --models does not train it")
    # the twin before what may start from it, the variants after the run they vary
    args.models = [m for m in ("ann", "individual") if m in args.models] + list(args.variants) + \
                  [m for m in ("repeat",) if m in args.models]
    return args


def is_variant(model: str) -> bool:
    """Whether ``model`` names a ``--variant`` run (``individual-NAME``)."""
    return model.startswith("individual-")


def is_snn_bert(model: str) -> bool:
    """Whether ``model``'s run is SNN-BERT with individual coding: ``individual`` or a variant."""
    return model == "individual" or is_variant(model)


def snn_flags(args, model: str) -> list[str]:
    """The flags an SNN-BERT run adds to its model's: ``--individual_flags``, then a variant's own
    (``{twin}`` not yet replaced); none for the ANN and repeat runs."""
    if not is_snn_bert(model):
        return []
    return [*args.individual_flags, *args.variants.get(model, [])]


def model_flags(model: str) -> list[str]:
    """A run's flags beyond the shared budget (a variant is an ``individual`` run)."""
    return MODELS["individual" if is_variant(model) else model]


def needs_twin(args, model: str) -> bool:
    """Whether ``model``'s run starts from, or is taught by, its task's ANN twin."""
    if model == "repeat":
        return args.repeat_from_twin
    if not is_snn_bert(model):
        return False
    return args.snn_from_twin or args.distil_from_twin or any(TWIN in f for f in snn_flags(args, model))


def skip_reason(task: str, data_dir: Optional[str]) -> Optional[str]:
    """Why ``task`` cannot be trained from ``data_dir`` (None: it can)."""
    if data_dir is None:
        return None  # the hub's GLUE has every train split
    path = glue.train_file(task, data_dir)
    return None if os.path.isfile(path) else f"no train data: {path} does not exist"


def run_command(args, task: str, model: str, run_dir: Path, max_minutes: Optional[float] = None) -> list[str]:
    command = [*shlex.split(args.launcher), str(HERE / "finetune.py"), "--task", task,
               "--output_dir", str(run_dir), "--seed", str(args.seed), "--max_length", str(args.max_length),
               "--num_train_epochs", str(args.num_train_epochs),
               "--per_device_train_batch_size", str(args.per_device_train_batch_size),
               "--checkpointing_steps", "epoch", *model_flags(model)]
    if args.data_dir:
        command += ["--data_dir", args.data_dir]
    twin = str(run_dir.parent / "ann")
    snn = is_snn_bert(model)
    if (snn and args.snn_from_twin) or (model == "repeat" and args.repeat_from_twin):
        command += ["--model_name_or_path", twin]
    elif args.model_name_or_path:
        command += ["--model_name_or_path", args.model_name_or_path]
    if snn and args.distil_from_twin:
        command += ["--teacher", twin]
    command += [f.replace(TWIN, twin) for f in snn_flags(args, model)]
    if args.pair_encoding == "bi" and glue.is_pair_task(task):
        command += ["--pair_encoding", "bi"]
    if args.smoke:
        command += SMOKE
    if any(p.name.startswith(("epoch_", "step_")) for p in run_dir.glob("*")):
        command += ["--resume_from_checkpoint", "latest"]
    if max_minutes is not None:
        command += ["--max_minutes", f"{max_minutes:.2f}"]
    return command + args.finetune_flags


def run_logged(command: list[str], log: Path, echo: bool = True) -> int:
    """Run ``command`` from the project root, its output at the end of ``log`` (a continued run's
    output follows the earlier one's) and, with ``echo``, on this console; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # one progress-bar line every 10 s instead of 10 a second: the log stays readable
    env = {"TQDM_MININTERVAL": "10", **os.environ}
    with open(log, "ab") as sink, subprocess.Popen(command, cwd=HERE.parent, env=env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT) as process:
        while chunk := process.stdout.read1(1 << 16):
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            sink.write(chunk)
    return process.returncode


def run_log(run_dir: Path) -> Path:
    """Where a run's output goes: beside its folder, which finetune.py wants empty or its own."""
    return run_dir.with_name(f"{run_dir.name}.log")


def keep_run(results_dir: Path, task: str, model: str, run_dir: Path) -> None:
    """Copy what a session keeps of one run into ``results_dir``: its ``all_results.json`` and the
    end of its output (written under a temporary name, then renamed)."""
    done, log = run_dir / "all_results.json", run_log(run_dir)
    if done.is_file():
        write_json(results_dir / f"{task}_{model}.json", read_json(done))
    if log.is_file():
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
            write_text(results_dir / f"{task}_{model}.log", f.read().decode("utf-8", errors="replace"))


def budget_skip_reason(args, left: Optional[float]) -> Optional[str]:
    """Why a run cannot start with ``left`` seconds of ``--minutes`` (None: it can, or no budget)."""
    if left is None or left >= RUN_START_MIN_S:
        return None
    return (f"--minutes {args.minutes:g}: {max(left, 0.0) / 60:.1f} min left, under the "
            f"{RUN_START_MIN_S / 60:g} min a run needs to start, train and finish; not started")


def summary(task: str, results: dict) -> dict:
    """What the table needs from one run's all_results.json."""
    energy = results.get("energy") or {}
    return {
        "metric": results.get(glue.MAIN_METRIC[task]),
        "metrics": {k: v for k, v in results.items() if k.startswith("eval_") and isinstance(v, float)},
        "firing_rate": energy.get("firing_rate"),
        "energy_mj": energy.get("energy_per_sample_mj"),
        "ann_energy_mj": (energy.get("ann") or {}).get("energy_per_sample_mj"),
        "train_steps": results.get("train_steps"),
        "epochs": results.get("epochs"),
        "epochs_trained": results.get("epochs_trained"),
        "stopped_early": bool(results.get("stopped_early")),
        "stop_reason": results.get("stop_reason"),
        "mixed_precision": results.get("mixed_precision"),
        "num_processes": results.get("num_processes"),
        "command": results.get("command"),
    }


def table(rows: dict, models: list[str]) -> str:
    """Markdown: per task the main metric of each model (x100; ``*``: cut by its time budget,
    named below the table), firing rate, energy, ratio; with variants, a second table of every
    SNN-BERT run's metric, firing rate, energy and epochs trained."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    def metric(run):
        return pct(run.get("metric")) + ("*" if run.get("stopped_early") else "")

    def mj(value):
        return "-" if value is None else f"{value:.3f}"

    head = ["task", "metric", *(f"{m}" for m in models), "SNN firing", "SNN mJ", "repeat mJ", "ANN mJ", "ANN/SNN energy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    complete = []
    for task, runs in rows.items():
        snn = runs.get("individual", {})
        ann_mj = snn.get("ann_energy_mj")
        ratio = f"{ann_mj / snn['energy_mj']:.1f}x" if ann_mj and snn.get("energy_mj") else "-"
        lines.append("| " + " | ".join([
            task, glue.MAIN_METRIC[task].removeprefix("eval_"), *(metric(runs.get(m, {})) for m in models),
            pct(snn.get("firing_rate")), mj(snn.get("energy_mj")), mj(runs.get("repeat", {}).get("energy_mj")),
            mj(ann_mj), ratio]) + " |")
        if all(runs.get(m, {}).get("metric") is not None and not runs[m]["stopped_early"] for m in models):
            complete.append(task)
    if complete:
        means = [sum(rows[t][m]["metric"] for t in complete) / len(complete) for m in models]
        lines.append("| " + " | ".join([f"average ({len(complete)} tasks)", "", *(pct(v) for v in means),
                                         "", "", "", "", ""]) + " |")
    cut = [f"\\* {task} {m}: {run['stop_reason']}" for task, runs in rows.items() for m, run in runs.items()
           if run.get("stopped_early")]
    if any(is_variant(m) for m in models):  # variants: each SNN-BERT run's own firing rate and energy
        snn_runs = [m for m in models if is_snn_bert(m)]
        lines += ["", "| task | SNN-BERT run | metric | firing | mJ | ANN/SNN energy | epochs |", "|" + "---|" * 7]
        for task, runs in rows.items():
            for m in snn_runs:
                run = runs.get(m, {})
                ratio = run.get("ann_energy_mj") and run.get("energy_mj") and run["ann_energy_mj"] / run["energy_mj"]
                lines.append(f"| {task} | {m} | {metric(run)} | {pct(run.get('firing_rate'))} | "
                             f"{mj(run.get('energy_mj'))} | {f'{ratio:.1f}x' if ratio else '-'} | "
                             f"{run.get('epochs_trained') or run.get('epochs') or '-'} |")
    return "\n".join(lines + ([""] + cut if cut else []))


def write_tables(args, out: Path, rows: dict, skipped: dict, failed: dict) -> dict:
    """The table as markdown and JSON in ``out`` (and ``--results``, ``--results_dir``); written
    after every run, so a suite stopped from outside leaves the table of the runs it finished."""
    markdown = table(rows, args.models)
    result = {"bench": "glue_suite", "smoke": args.smoke, "data_dir": args.data_dir, "models": args.models,
              "model_flags": {m: model_flags(m) + snn_flags(args, m) for m in args.models},
              "snn_from_twin": args.snn_from_twin, "repeat_from_twin": args.repeat_from_twin,
              "distil_from_twin": args.distil_from_twin, "pair_encoding": args.pair_encoding,
              "num_train_epochs": args.num_train_epochs,
              "per_device_train_batch_size": args.per_device_train_batch_size, "max_length": args.max_length,
              "seed": args.seed, "launcher": args.launcher, "jobs": args.jobs, "extra_flags": args.finetune_flags,
              "minutes": args.minutes, "main_metric": {t: glue.MAIN_METRIC[t] for t in rows}, "runs": rows,
              "skipped": skipped, "failed": failed, "table": markdown}
    notes = [f"not in the table: {name}: {reason}" for name, reason in {**skipped, **failed}.items()]
    pair_tasks = [task for task in rows if glue.is_pair_task(task)]
    if args.pair_encoding == "bi" and pair_tasks:
        notes.insert(0, f"bi-encoders (each sentence encoded alone, then compared) on the pair tasks: "
                        f"{', '.join(pair_tasks)}")
    for folder in (out, *([Path(args.results_dir)] if args.results_dir else [])):
        write_json(folder / "glue_results.json", result)
        write_text(folder / "glue_results.md", "\n".join([markdown, *([""] + notes if notes else [])]) + "\n")
    if args.results:
        write_json(args.results, result)
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    deadline = None if args.minutes is None else wall_clock() + 60.0 * args.minutes
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_dir = Path(args.results_dir) if args.results_dir else None
    skipped = {task: reason for task in args.tasks if (reason := skip_reason(task, args.data_dir))}
    tasks = [t for t in args.tasks if t not in skipped]
    for task, reason in skipped.items():
        print(f"skipping {task}: {reason}", flush=True)
    queue = [(task, model) for task in tasks for model in args.models]  # in the order they start
    total, index = len(queue), 0
    rows, failed = {task: {} for task in tasks}, {}
    running = {}  # future of run_logged -> (task, model, its index, start time)

    def record(task: str, model: str) -> None:
        rows[task][model] = summary(task, read_json(out / task / model / "all_results.json"))
        if results_dir:
            keep_run(results_dir, task, model, out / task / model)
        write_tables(args, out, rows, skipped, failed)

    def twin_unfinished(task: str) -> bool:
        return (task, "ann") in queue or any(r[:2] == (task, "ann") for r in running.values())

    def start(task: str, model: str, i: int) -> None:
        """Start the run, or say why not (done earlier, no time left, no twin to start from)."""
        name, run_dir = f"{task}/{model}", out / task / model
        done = run_dir / "all_results.json"
        earlier = read_json(done) if done.is_file() else None
        left = None if deadline is None else deadline - wall_clock()
        if earlier is not None and not earlier.get("stopped_early"):
            print(f"[{i}/{total}] {name}: done earlier ({done})", flush=True)
            record(task, model)
        elif reason := budget_skip_reason(args, left):
            skipped[name] = reason
            print(f"[{i}/{total}] {name}: {reason}", flush=True)
        elif needs_twin(args, model) and "ann" not in rows[task]:
            flag = ("--repeat_from_twin" if model == "repeat" else "--snn_from_twin" if args.snn_from_twin
                    else "--distil_from_twin" if args.distil_from_twin
                    else f"--variant {model.removeprefix('individual-')} ({TWIN})")
            failed[name] = f"{flag}: the task's ANN twin did not finish, nothing to start from"
            print(f"[{i}/{total}] {name}: {failed[name]}", flush=True)
        else:
            if earlier is not None:
                print(f"[{i}/{total}] {name}: cut earlier ({earlier.get('stop_reason')}); continuing", flush=True)
            max_minutes = None if left is None else (left - FINISH_RESERVE_S) / 60
            command = run_command(args, task, model, run_dir, max_minutes)
            print(f"[{i}/{total}] {name}: {' '.join(command)}", flush=True)
            quiet = {} if args.jobs == 1 else {"echo": False}  # parallel runs' output: their logs only
            running[pool.submit(run_logged, command, run_log(run_dir), **quiet)] = (task, model, i, time.perf_counter())

    def finish(future) -> None:
        task, model, i, began = running.pop(future)
        name, run_dir = f"{task}/{model}", out / task / model
        code = future.result()
        print(f"[{i}/{total}] {name}: exit {code} after {time.perf_counter() - began:.0f} s", flush=True)
        if code != 0 or not (run_dir / "all_results.json").is_file():
            failed[name] = (f"finetune.py exited {code}; its output is in {run_log(run_dir)}, "
                            f"its checkpoints stay in {run_dir}")
            if results_dir:
                keep_run(results_dir, task, model, run_dir)  # the traceback, for the session to read
            write_tables(args, out, rows, skipped, failed)
        else:
            record(task, model)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        while queue or running:
            for task, model in list(queue):
                if len(running) >= args.jobs:
                    break
                if needs_twin(args, model) and twin_unfinished(task):
                    continue  # starts once its twin has finished
                queue.remove((task, model))
                index += 1
                start(task, model, index)
            if running:
                for future in wait(running, return_when=FIRST_COMPLETED)[0]:
                    finish(future)

    result = write_tables(args, out, rows, skipped, failed)
    print("\n" + result["table"])
    for name, reason in {**skipped, **failed}.items():
        print(f"not in the table: {name}: {reason}")
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if outcome["failed"] else 0)
