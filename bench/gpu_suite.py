"""The GPU validation run as one prepared command: every stage in order, within a time budget.

    python bench/gpu_suite.py --out DIR                    # on a CUDA machine (a lent H100/H200)
    python bench/gpu_suite.py --smoke --out /tmp/smoke     # every stage at tiny shapes on the CPU
    python bench/gpu_suite.py --out DIR --stages neuron coding --minutes 6

Stages, in this order:

- ``env``: GPU name, driver, memory, library versions, and the device-to-device copy
  bandwidth measured in this run (the ceiling the neuron stage is compared with);
- ``cuda-tests``: ``pytest -m cuda tests``: the compiled Triton and CuPy kernels against the
  torch path (outputs and every gradient), ``torch.compile``, the model on CUDA against CPU;
- ``neuron``: ``bench/neuron.py``, fused BPSN vs SpikingJelly's LIF, PSN and SlidingPSN at
  equal ``[T, N]``, fp32 then bf16;
- ``coding``: ``bench/coding.py`` at the MiniLM-L6 shape, batch 32, L in {64, 128, 256, 512},
  bf16 autocast: ANN vs individual vs repeat coding (training step time and peak memory);
- ``inference``: ``bench/inference.py``, SST-2 dev sentences per second, SNN-BERT vs ANN.

Each stage runs in its own process (a CUDA error in one cannot poison the next) with a
timeout drawn from what is left of ``--minutes``; a stage that fails or times out is logged
and the next one runs; a stage whose turn comes when the budget is spent is skipped. Every
stage writes its JSON to ``DIR``; in a real (non-smoke) run the JSON is also copied to
``bench/results/``. The summary, ``gpu_suite_<device>.json``, is rewritten after every stage,
so a run cut short still says how far it got; all output goes to ``DIR/suite.log`` too. At
most 8 files land in ``DIR`` (what a device run can bring back).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STAGES = ("env", "cuda-tests", "neuron", "coding", "inference")
# share of the remaining budget each stage may use (rescaled over the stages still to run),
# after what each took on an H200 on 2026-11-28 (bench/results/gpu_runs/2026-11-28_h200_suite4_*):
# env 14 s, cuda-tests 117 s, neuron about 260 s, coding about 200 s, inference 74 s. The whole
# suite needs about 11 minutes there: more than one 10-minute device call (README: two calls)
SHARES = {"env": 0.02, "cuda-tests": 0.18, "neuron": 0.40, "coding": 0.28, "inference": 0.12}
# weight of a stage's command in its stage's budget, by the JSON it writes (default 1): the
# bf16 neuron sweep needed about 1.4x the fp32 one's time (150 s against 110 on the H200;
# SpikingJelly's LIF is slow in bf16)
COMMAND_WEIGHTS = {"neuron_cuda_bf16": 1.4}
CUDA_TEST_WORKERS = 4  # processes for the cuda-tests stage where pytest-xdist is installed
CUDA_TEST_TIMEOUT_S = 180  # per test, where pytest-timeout is installed
PACKAGES = ("torch", "triton", "cupy-cuda13x", "cupy-cuda12x", "transformers", "huggingface_hub", "accelerate",
            "spikingjelly", "safetensors", "numpy", "sj-bert")


class Log:
    """Prints and appends to ``DIR/suite.log``, the one log a device run brings back."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, text: str) -> None:
        print(text, flush=True)
        with open(self.path, "a") as f:
            f.write(text + "\n")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def nvidia_smi() -> dict:
    """Driver, name and memory as nvidia-smi reports them (empty where it is missing)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    query = "name,driver_version,memory.total,clocks.max.sm,clocks.max.mem"
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()[0]
    except (subprocess.SubprocessError, IndexError, OSError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    return dict(zip(query.split(","), (v.strip() for v in line.split(","))))


def env_stage(args, device: torch.device) -> dict:
    """Machine facts and the copy bandwidth, measured here (in-process: it is short)."""
    from sj_bert.timing import copy_gbps, device_name

    copy_mb = 64 if args.smoke else 2048
    result = {
        "bench": "env",
        "device": str(device),
        "device_name": device_name(device),
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "copy_gbps": copy_gbps(device, copy_mb << 20),
        "copy_method": f"median of 20 device-to-device copies of {copy_mb} MiB (fp32), bytes read plus written",
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        result.update(nvidia_smi=nvidia_smi(), multiprocessors=props.multi_processor_count,
                      memory_gib=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                      cuda=torch.version.cuda)
    return result


def summary_line(output: str) -> str:
    """pytest's closing line (``3 failed, 131 passed in 39.5s``); plugins such as
    pytest-benchmark may print warnings after it."""
    for line in reversed(output.splitlines()):
        if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)", line) and " in " in line:
            return line
    return ""


def pytest_counts(output: str) -> dict:
    """Counts from pytest's closing line (``3 passed, 2 skipped in 1.2s``)."""
    counts = {key: 0 for key in ("passed", "failed", "skipped", "errors", "deselected")}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output):
        counts["errors" if word.startswith("error") else word] += int(number)
    return counts


def bench_commands(args, device: torch.device, out: Path) -> dict[str, list[tuple[list[str], Path]]]:
    """Per stage: the commands to run and the JSON each writes."""
    py, bench = sys.executable, REPO / "bench"
    tag = device.type
    if args.smoke:
        neuron = ["--T", "4", "9", "--N", "64", "--warmup", "0", "--repeats", "2", "--copy_mb", "8"]
        coding = ["--shape", "tiny", "--batch_size", "2", "--lengths", "8", "--warmup", "0", "--steps", "1",
                  "--autocast", "bf16", "--infer_batch_sizes", "1", "--infer_lengths", "8"]
        inference = ["--max_sentences", "4", "--batch_sizes", "1", "2", "--warmup", "0", "--repeats", "1"]
    else:
        # per-channel cases at SNN-BERT's training batch; the [T, T] reference only where it
        # is short (it is the tests' yardstick, not a path anyone runs on a GPU); the Triton
        # kernels also at 1 step per tile (the per-step scan of the first GPU run) and 32
        neuron = ["--T", "16", "64", "128", "256", "512", "1024", "--batch", "32", "--repeats", "10",
                  "--reference_max_T", "64", "--triton_steps", "1", "32"]
        # L=128 also under torch.compile with CUDA graphs (reduce-overhead), after every eager
        # row (bench/coding.py saves each phase): eager steps were launch-bound on the H200
        # (2026-11-27), so only graphs show the GPU's own time ratios
        coding = ["--shape", "minilm", "--batch_size", "32", "--lengths", "64", "128", "256", "512",
                  "--autocast", "bf16", "--compile_lengths", "128", "--compile_mode", "reduce-overhead"]
        # half of SST-2 dev: at batch 1 every pass is launch-bound, and the whole set took
        # most of the stage's budget on 2026-11-27 without changing the ratio
        inference = ["--batch_sizes", "1", "64", "--repeats", "2", "--max_sentences", "436"]
    device_flag = ["--device", str(device)]
    return {
        "neuron": [
            ([py, str(bench / "neuron.py"), *device_flag, *neuron, "--dtype", "fp32"], out / f"neuron_{tag}.json"),
            ([py, str(bench / "neuron.py"), *device_flag, *neuron, "--dtype", "bf16"], out / f"neuron_{tag}_bf16.json"),
        ],
        "coding": [([py, str(bench / "coding.py"), *device_flag, *coding], out / f"coding_{tag}.json")],
        "inference": [([py, str(bench / "inference.py"), *device_flag, "--data_dir", args.data_dir, *inference],
                       out / f"inference_{tag}.json")],
    }


def run_logged(command: list[str], timeout: float, log: Log) -> tuple[int, str]:
    """Run ``command``, its output into the log; ``(returncode, output)``; 124 on timeout."""
    log(f"$ {' '.join(command)}   (timeout {timeout:.0f} s)")
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=max(timeout, 1.0))
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        output += f"\nTIMEOUT after {timeout:.0f} s"
        code = 124
    log(output.rstrip())
    return code, output


def cuda_tests_stage(args, device: torch.device, timeout: float, log: Log) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests", "-p", "no:cacheprovider", "-rfE"]
    # On the GPU machine (16 cores) most of this stage is compiling kernels: spread the tests
    # over processes, and stop a hung test rather than the whole budget.
    if device.type == "cuda" and importlib.util.find_spec("xdist") is not None:
        command += ["-n", str(CUDA_TEST_WORKERS)]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command += ["--timeout", str(CUDA_TEST_TIMEOUT_S)]
    start = time.perf_counter()
    code, output = run_logged(command, timeout, log)
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"bench": "cuda-tests", "device": str(device), "command": " ".join(command[1:]), "returncode": code,
            "seconds": time.perf_counter() - start, **pytest_counts(summary_line(output)),
            "failures": failures}


def headline(stage: str, data: dict) -> str:
    """One line of the stage's key numbers for the summary table."""
    if stage == "env":
        return f"{data['device_name']}, copy {data['copy_gbps']:.0f} GB/s"
    if stage == "cuda-tests":
        return (f"{data['passed']} passed, {data['failed']} failed, {data['errors']} errors, "
                f"{data['skipped']} skipped (rc {data['returncode']})")
    if stage == "neuron":
        parts = []
        for d in data:
            # the backends auto picks (torch on the CPU); triton@S rows compare tile lengths
            worst = max((r for r in d["ratios"]
                         if (r["backend"] != "torch" or d["device"] == "cpu") and "@" not in r["backend"]),
                        key=lambda r: r.get("bpsn_over_lif", 0), default=None)
            best = max((r["copy_fraction"] for r in d["results"] if r["neuron"] == "bpsn"), default=0)
            if worst and "bpsn_over_lif" in worst:
                parts.append(f"{d['dtype']}: worst bpsn/{worst['backend']}/lif {worst['bpsn_over_lif']:.2f}x "
                             f"(T={worst['T']}), best {best:.0%} of copy")
        return "; ".join(parts)
    if stage == "coding":
        length = "128" if "128" in data["ratios"] else next(iter(data["ratios"]))
        r = data["ratios"][length]
        compiled = r.get("individual+compile/ann+compile time")
        return (f"L={length}: individual/ann {r.get('individual/ann time', float('nan')):.2f}x time, "
                f"repeat/individual {r.get('repeat/individual time', float('nan')):.2f}x time "
                f"{r.get('repeat/individual memory', float('nan')):.2f}x memory"
                + ("" if compiled is None else f"; compiled individual/ann {compiled:.2f}x time"))
    if stage == "inference":
        return ", ".join(f"batch {b}: snn/ann {v['snn/ann throughput']:.3f}x" for b, v in data["ratios"].items())
    return ""


def publish(path: Path, smoke: bool) -> None:
    """Copy a stage's JSON into bench/results/ (real runs only: a smoke run must not
    overwrite measured results), under a temporary name first."""
    if smoke:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f".{path.name}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, RESULTS / path.name)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for every stage's JSON, the summary and suite.log")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, a few minutes (CI runs this)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--minutes", type=float, default=None, help="time budget (default: 9, smoke: 10)")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"),
                        help="classic glue_data folder with SST-2/dev.tsv (the inference stage)")
    args = parser.parse_args(argv)
    args.minutes = args.minutes if args.minutes is not None else (10.0 if args.smoke else 9.0)
    if args.minutes <= 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device here: the full suite is for a GPU machine; use --smoke on the CPU")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke else "cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "suite.log")
    deadline = time.monotonic() + 60 * args.minutes
    commands = bench_commands(args, device, out)
    summary_path = out / f"gpu_suite_{device.type}.json"
    summary = {"bench": "gpu_suite", "device": str(device), "smoke": args.smoke, "minutes": args.minutes,
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stages": {}}
    stages = [s for s in STAGES if s in args.stages]
    log(f"gpu_suite: stages {', '.join(stages)}; budget {args.minutes:g} min; device {device}; out {out}")

    def write_summary() -> None:
        from sj_bert.files import write_json

        write_json(str(summary_path), summary)
        publish(summary_path, args.smoke)

    for index, stage in enumerate(stages):
        left = deadline - time.monotonic()
        share = SHARES[stage] / sum(SHARES[s] for s in stages[index:])
        timeout = left * share
        record: dict = {"status": "skipped", "seconds": 0.0, "files": []}
        summary["stages"][stage] = record
        if left <= 5:
            record["reason"] = "the time budget was spent before its turn"
            log(f"== {stage}: skipped ({record['reason']})")
            write_summary()
            continue
        log(f"== {stage} (up to {timeout:.0f} s)")
        start = time.perf_counter()
        try:
            if stage in ("env", "cuda-tests"):
                data = env_stage(args, device) if stage == "env" else cuda_tests_stage(args, device, timeout, log)
                path = out / f"{stage.replace('-', '_')}_{device.type}.json"
                from sj_bert.files import write_json

                write_json(str(path), data)
                results, paths = data, [path]
                failed = stage == "cuda-tests" and (data["returncode"] not in (0, 5) or data["failed"] or data["errors"])
            else:
                results, paths, failed = [], [], False
                for index_in_stage, (command, path) in enumerate(commands[stage]):
                    # a weighted share of what is left for each command still to run (the bf16
                    # sweep must not starve behind fp32); a stopped bench keeps its partial JSON
                    remaining = timeout - (time.perf_counter() - start)
                    weights = [COMMAND_WEIGHTS.get(p.stem, 1.0) for _, p in commands[stage][index_in_stage:]]
                    share_of_stage = remaining * weights[0] / sum(weights)
                    code, _ = run_logged([*command, "--out", str(path)], share_of_stage, log)
                    if code != 0:
                        failed = True
                        record["returncode"] = code
                    if path.is_file():
                        results.append(json.loads(path.read_text()))
                        paths.append(path)
                results = results[0] if stage != "neuron" and results else results
            for path in paths:
                publish(path, args.smoke)
            record.update(status="failed" if failed else "ok", files=[p.name for p in paths])
            if results:
                record["headline"] = headline(stage, results)
        except Exception as err:  # noqa: BLE001 - a failing stage is logged; the next one still runs
            import traceback

            record.update(status="failed", error=f"{type(err).__name__}: {err}")
            log(traceback.format_exc())
        record["seconds"] = time.perf_counter() - start
        write_summary()

    log(f"\n{'stage':<12}{'status':<9}{'seconds':>8}  key numbers")
    for stage, record in summary["stages"].items():
        note = record.get("headline") or record.get("error") or record.get("reason", "")
        log(f"{stage:<12}{record['status']:<9}{record['seconds']:>8.1f}  {note}")
    summary["ok"] = all(r["status"] == "ok" for r in summary["stages"].values())
    write_summary()
    log(f"wrote {summary_path}" + ("" if args.smoke else f" and copied the stage JSON into {RESULTS}"))
    return summary


if __name__ == "__main__":
    summary = main()
    sys.exit(0 if summary["ok"] else 1)
