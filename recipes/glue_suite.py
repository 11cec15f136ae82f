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

``--snn_from_twin`` builds each task's SNN-BERT from that task's fine-tuned ANN twin
(``<output_dir>/<task>/ann``) instead of from BERT: two stages, the twin first (the lever
``from_twin`` of ``docs/accuracy.md``); ``--individual_flags`` adds flags to the SNN-BERT
runs only (e.g. ``"--learnable_threshold"``).

It resumes where it stopped: a run whose ``all_results.json`` exists is done and is not run
again; an unfinished one continues from its last epoch checkpoint (``--checkpointing_steps
epoch --resume_from_checkpoint latest``), so a run cut short by a GPU lease continues in the
next one. Tasks without train data in ``--data_dir`` are skipped with the reason (QNLI and MNLI
ship dev sets only here, QQP is missing); without ``--data_dir`` the hub's GLUE is used.

The table gives each task's official metric (:data:`sj_bert.glue.MAIN_METRIC`) for the three
models and their average over the tasks that have all three, the SNN's firing rate, energy
per sample (SNN, repeat, ANN) and the ANN/SNN energy ratio, all taken from the runs'
``all_results.json``; ``glue_results.json`` holds those summaries and the exact commands.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from sj_bert import glue
from sj_bert.files import read_json, write_json, write_text

HERE = Path(__file__).resolve().parent
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
    parser.add_argument("--individual_flags", default="",
                        help='finetune.py flags for the SNN-BERT runs only, one string, e.g. "--learnable_threshold"')
    parser.add_argument("--results", default=None,
                        help="also write the JSON table here (e.g. bench/results/glue_suite_cuda.json)")
    args, extra = parser.parse_known_args(argv)
    args.tasks = [glue.check_task(t) for t in args.tasks]
    for flag in ("num_train_epochs", "per_device_train_batch_size", "max_length"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    args.finetune_flags = extra  # anything else goes to every finetune.py run
    args.individual_flags = shlex.split(args.individual_flags)
    if args.snn_from_twin:
        if "individual" not in args.models or "ann" not in args.models:
            parser.error("--snn_from_twin builds SNN-BERT from the ANN twin: --models must hold ann and individual")
        if "--model_name_or_path" in args.individual_flags:
            parser.error("--snn_from_twin sets the SNN-BERT runs' --model_name_or_path (the twin's folder)")
    args.models = [m for m in MODELS if m in args.models]  # the twin before what may start from it
    return args


def skip_reason(task: str, data_dir: Optional[str]) -> Optional[str]:
    """Why ``task`` cannot be trained from ``data_dir`` (None: it can)."""
    if data_dir is None:
        return None  # the hub's GLUE has every train split
    path = glue.train_file(task, data_dir)
    return None if os.path.isfile(path) else f"no train data: {path} does not exist"


def run_command(args, task: str, model: str, run_dir: Path) -> list[str]:
    command = [*shlex.split(args.launcher), str(HERE / "finetune.py"), "--task", task,
               "--output_dir", str(run_dir), "--seed", str(args.seed), "--max_length", str(args.max_length),
               "--num_train_epochs", str(args.num_train_epochs),
               "--per_device_train_batch_size", str(args.per_device_train_batch_size),
               "--checkpointing_steps", "epoch", *MODELS[model]]
    if args.data_dir:
        command += ["--data_dir", args.data_dir]
    if model == "individual" and args.snn_from_twin:
        command += ["--model_name_or_path", str(run_dir.parent / "ann")]
    elif args.model_name_or_path:
        command += ["--model_name_or_path", args.model_name_or_path]
    if model == "individual":
        command += args.individual_flags
    if args.smoke:
        command += SMOKE
    if any(p.name.startswith(("epoch_", "step_")) for p in run_dir.glob("*")):
        command += ["--resume_from_checkpoint", "latest"]
    return command + args.finetune_flags


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
        "mixed_precision": results.get("mixed_precision"),
        "num_processes": results.get("num_processes"),
        "command": results.get("command"),
    }


def table(rows: dict, models: list[str]) -> str:
    """Markdown: per task the main metric of each model (x100), firing rate, energy, ratio."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

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
            task, glue.MAIN_METRIC[task].removeprefix("eval_"), *(pct(runs.get(m, {}).get("metric")) for m in models),
            pct(snn.get("firing_rate")), mj(snn.get("energy_mj")), mj(runs.get("repeat", {}).get("energy_mj")),
            mj(ann_mj), ratio]) + " |")
        if all(runs.get(m, {}).get("metric") is not None for m in models):
            complete.append(task)
    if complete:
        means = [sum(rows[t][m]["metric"] for t in complete) / len(complete) for m in models]
        lines.append("| " + " | ".join([f"average ({len(complete)} tasks)", "", *(pct(v) for v in means),
                                         "", "", "", "", ""]) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {task: reason for task in args.tasks if (reason := skip_reason(task, args.data_dir))}
    tasks = [t for t in args.tasks if t not in skipped]
    for task, reason in skipped.items():
        print(f"skipping {task}: {reason}", flush=True)
    total, index = len(tasks) * len(args.models), 0
    rows, failed = {}, {}
    for task in tasks:
        rows[task] = {}
        for model in args.models:
            index += 1
            run_dir = out / task / model
            done = run_dir / "all_results.json"
            if done.is_file():
                print(f"[{index}/{total}] {task} {model}: done earlier ({done})", flush=True)
            elif model == "individual" and args.snn_from_twin and "ann" not in rows[task]:
                failed[f"{task}/{model}"] = "--snn_from_twin: the task's ANN twin did not finish, nothing to start from"
                print(f"[{index}/{total}] {task} {model}: {failed[f'{task}/{model}']}", flush=True)
                continue
            else:
                command = run_command(args, task, model, run_dir)
                print(f"[{index}/{total}] {task} {model}: {' '.join(command)}", flush=True)
                start = time.perf_counter()
                code = subprocess.run(command, cwd=HERE.parent).returncode
                print(f"[{index}/{total}] {task} {model}: exit {code} after {time.perf_counter() - start:.0f} s",
                      flush=True)
                if code != 0 or not done.is_file():
                    failed[f"{task}/{model}"] = f"finetune.py exited {code}; its checkpoints stay in {run_dir}"
                    continue
            rows[task][model] = summary(task, read_json(str(done)))

    markdown = table(rows, args.models)
    result = {"bench": "glue_suite", "smoke": args.smoke, "data_dir": args.data_dir, "models": args.models,
              "model_flags": {m: MODELS[m] + (args.individual_flags if m == "individual" else []) for m in args.models},
              "snn_from_twin": args.snn_from_twin, "num_train_epochs": args.num_train_epochs,
              "per_device_train_batch_size": args.per_device_train_batch_size, "max_length": args.max_length,
              "seed": args.seed, "launcher": args.launcher, "extra_flags": args.finetune_flags,
              "main_metric": {t: glue.MAIN_METRIC[t] for t in rows}, "runs": rows, "skipped": skipped,
              "failed": failed, "table": markdown}
    write_json(str(out / "glue_results.json"), result)
    write_text(str(out / "glue_results.md"), markdown + "\n")
    if args.results:
        write_json(args.results, result)
    print("\n" + markdown)
    for name, reason in {**skipped, **failed}.items():
        print(f"not in the table: {name}: {reason}")
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if outcome["failed"] else 0)
