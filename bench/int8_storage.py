"""Int8 storage of the spike-fed weight matrices (#12): does the zoo's sst2 keep its accuracy?

In SNN-BERT every encoder ``nn.Linear`` (query/key/value, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``) is fed by spikes; embeddings, LayerNorms, pooler and
classifier see real values. Neuromorphic hardware stores synaptic weights in 8 bits or fewer.
This bench replaces weights by their quantize-dequantize ("fake quant": ``round(w / s)``
clamped to ``[-qmax, qmax]``, times ``s``; symmetric, no zero point, ``s = max|w| / qmax`` per
output channel (row) or per tensor) and scores SST-2 dev again, exactly as
``tests/zoo/test_zoo.py`` does (batches of 64, ``padding=True``, truncation at 128). Biases,
BPSN decays, LayerNorms and embeddings keep their stored fp16 values unless a scheme names them.

Schemes (see :data:`SCHEMES`):

- ``int8_channel``: spike-fed matrices, int8 per output channel (the candidate);
- ``int8_tensor``: spike-fed matrices, int8, one scale per tensor;
- ``int4_channel``: spike-fed matrices, int4 per output channel (where it breaks);
- ``int8_channel_linears``: every encoder Linear plus pooler and classifier, int8 per channel;
- ``int8_channel_all``: the same plus the three embedding tables (per row), i.e. every 2-D
  tensor of the checkpoint.
- ``int8_channel_stored``: ``int8_channel`` as the zoo serves ``recipes/publish.py
  --int8_spike_fed`` files (``codes * s`` rounded once to fp16); not in the default run (its own
  results file, ``bench/results/int8_storage_stored.json``).

The quantization is the zoo's own (:mod:`sj_bert.zoo.quantize`), one implementation for both.

Bytes are the tensor payload a checkpoint would store (safetensors headers excluded): int
values (int4 packed two a byte) plus one fp32 scale per row (per-channel) or per tensor, every
other tensor at its stored size (fp16). "delta" is the same for a checkpoint stored as what
differs from its base (``--delta_from_base`` with ``--freeze_embeddings``: the
``bert.embeddings.*`` tensors are left to the base and not stored; docs/zoo_storage.md).

Controls (see :data:`CONTROLS`; no storage format, no bytes): the spike-fed matrices rounded to
bf16, and Gaussian noise of the int8-per-channel error's RMS (three seeds). A spiking network is
discontinuous: any perturbation moves some membrane potentials across the threshold, so the
controls size how many flips a perturbation of that size brings whatever its structure.

The energy columns count the first dev batch (64 sentences) with :func:`sj_bert.energy.energy_report`:
a quantized weight is still one accumulate per spike, so only a changed spike count can move them.

    python bench/int8_storage.py                 # ~10 min on one CPU thread; bench/results/int8_storage.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import re
import shlex
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

import sj_bert
from sj_bert import zoo
from sj_bert.energy import energy_report
from sj_bert.files import write_json
from sj_bert.timing import device_name, torch_threads, versions
from sj_bert.zoo.quantize import SCALE_DTYPE, SPIKE_FED, dequantize_matrix, fake_quant, quantize_matrix

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEV = REPO.parent / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"
BATCH_SIZE = 64
SCALE_BYTES = SCALE_DTYPE.itemsize  # fp32 scales


def recorded_correct(model: str, sentences: int):
    """Dev sentences a zoo checkpoint's record says it classifies correctly, where ``model`` is a
    zoo name and the whole SST-2 dev set (872) is scored; None otherwise."""
    record = zoo.load_registry().get(model)
    if record is None or sentences != 872:
        return None
    return round(record.metrics["eval_accuracy"] * 872)


#: the encoder's spike-fed matrices (checked against the energy report's spike detection):
#: :data:`sj_bert.zoo.quantize.SPIKE_FED`, imported above
ENCODER_LINEAR = SPIKE_FED  # in SNN-BERT every encoder Linear is spike-fed
HEAD_LINEAR = re.compile(r"(^|\.)pooler\.dense\.weight$|^classifier\.weight$")
EMBEDDING = re.compile(r"(^|\.)embeddings\.(word|position|token_type)_embeddings\.weight$")
#: what a ``--delta_from_base`` checkpoint with frozen embeddings leaves to its base
LEFT_TO_BASE = re.compile(r"(^|\.)embeddings\.")

SCHEMES = {
    "int8_channel": dict(bits=8, per_channel=True, targets=("spike_fed",),
                         label="int8 per channel, spike-fed"),
    "int8_tensor": dict(bits=8, per_channel=False, targets=("spike_fed",),
                        label="int8 per tensor, spike-fed"),
    "int4_channel": dict(bits=4, per_channel=True, targets=("spike_fed",),
                         label="int4 per channel, spike-fed"),
    "int8_channel_linears": dict(bits=8, per_channel=True, targets=("spike_fed", "head"),
                                 label="int8 per channel, all Linears (+pooler, classifier)"),
    "int8_channel_all": dict(bits=8, per_channel=True, targets=("spike_fed", "head", "embeddings"),
                             label="int8 per channel, all Linears + embeddings"),
    # the zoo's format (recipes/publish.py --int8_spike_fed): the same codes and scales, but loading
    # rounds codes * s once to fp16 (the publish dtype), where int8_channel keeps it in fp32
    "int8_channel_stored": dict(bits=8, per_channel=True, targets=("spike_fed",), stored_dtype=torch.float16,
                                label="int8 per channel, spike-fed, as the zoo loads it (dequantized to fp16)"),
}
#: what a run without --schemes measures (bench/results/int8_storage.json); int8_channel_stored
#: was added later and is measured on its own (bench/results/int8_storage_stored.json)
DEFAULT_SCHEMES = [name for name in SCHEMES if name != "int8_channel_stored"]
TARGETS = {"spike_fed": SPIKE_FED, "head": HEAD_LINEAR, "embeddings": EMBEDDING}
#: controls, no storage format: how much does any perturbation of the spike-fed matrices move
#: the predictions? ``bf16``: rounded to bfloat16 (relative error <= 2**-8); ``noise<seed>``:
#: Gaussian noise whose RMS per tensor equals that of the int8-per-channel error
CONTROLS = {
    "bf16": dict(kind="bf16", targets=("spike_fed",), label="control: spike-fed rounded to bf16"),
    **{f"noise{seed}": dict(kind="noise", seed=seed, bits=8, per_channel=True, targets=("spike_fed",),
                            label=f"control: Gaussian noise, int8-channel RMS, seed {seed}")
       for seed in range(3)},
}


# -- quantization -----------------------------------------------------------------------
# one implementation: the zoo's int8 storage (recipes/publish.py --int8_spike_fed) and this bench
# quantize with the same functions (sj_bert/zoo/quantize.py)
quantize = quantize_matrix
dequantize = dequantize_matrix


def selected(names, targets) -> list[str]:
    """The tensor names a scheme's ``targets`` (keys of :data:`TARGETS`) quantize."""
    patterns = [TARGETS[t] for t in targets]
    return [n for n in names if any(p.search(n) for p in patterns)]


def perturbed(w: torch.Tensor, scheme: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What ``scheme`` (of :data:`SCHEMES` or :data:`CONTROLS`) puts in place of ``w``, and the
    quantization scales (``None`` for the controls)."""
    kind = scheme.get("kind", "quant")
    if kind == "quant" and "stored_dtype" in scheme:
        codes, scale = quantize_matrix(w, scheme["bits"], scheme["per_channel"])
        return dequantize_matrix(codes, scale, scheme["stored_dtype"]).to(w.dtype), scale
    if kind == "quant":
        return fake_quant(w, scheme["bits"], scheme["per_channel"])
    if kind == "bf16":
        return w.to(torch.bfloat16).to(w.dtype), None
    if kind == "noise":
        rms = (w.float() - fake_quant(w, scheme["bits"], scheme["per_channel"])[0].float()).pow(2).mean().sqrt()
        generator = torch.Generator().manual_seed(scheme["seed"])
        noise = torch.randn(w.shape, generator=generator, dtype=torch.float32) * rms
        return (w.float() + noise).to(w.dtype), None
    raise ValueError(f"unknown scheme kind {kind!r}")


@torch.no_grad()
def apply_scheme(model: torch.nn.Module, scheme: dict) -> dict:
    """Replace, in place, the weights ``scheme`` selects by their fake quant (or a control's
    perturbation). Returns error statistics: tensors, parameters, max |w - w_hat|, the largest
    ratio of that error to half a quantization step (<= 1 by construction; ``None`` for the
    controls), and ||W - W_hat|| / ||W|| over all of them."""
    params = dict(model.named_parameters())
    names = selected(params, scheme["targets"])
    max_abs = 0.0
    max_half_step_ratio = None
    err_sq = ref_sq = 0.0
    numel = 0
    for name in names:
        w = params[name]
        w_hat, scale = perturbed(w, scheme)
        err = (w.float() - w_hat.float()).abs()
        max_abs = max(max_abs, float(err.max()))
        if scale is not None:
            ratio = float((err / (scale.float() / 2)).max())
            max_half_step_ratio = ratio if max_half_step_ratio is None else max(max_half_step_ratio, ratio)
        err_sq += float((err.double() ** 2).sum())
        ref_sq += float((w.double() ** 2).sum())
        numel += w.numel()
        w.copy_(w_hat)
    return {"tensors": len(names), "parameters": numel, "max_abs_weight_error": max_abs,
            "max_error_over_half_step": max_half_step_ratio,
            "relative_frobenius_error": math.sqrt(err_sq / ref_sq) if ref_sq else 0.0,
            "quantized": names}


# -- bytes ------------------------------------------------------------------------------

def safetensors_layout(path) -> dict[str, dict]:
    """``{name: {"shape": [...], "bytes": n}}`` of a ``.safetensors`` file, from its header."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {k: {"shape": v["shape"], "bytes": v["data_offsets"][1] - v["data_offsets"][0]} for k, v in header.items()}


def layout_of(model: torch.nn.Module, dtype: torch.dtype = torch.float16) -> dict[str, dict]:
    """What :func:`safetensors_layout` gives for ``model`` saved in ``dtype`` (tests: no file)."""
    size = torch.tensor([], dtype=dtype).element_size()
    return {k: {"shape": list(v.shape), "bytes": v.numel() * size}
            for k, v in model.state_dict().items()}


def storage_bytes(layout: dict[str, dict], quantized, bits: int, per_channel: bool,
                  leave_out=None) -> dict:
    """Payload bytes of a checkpoint of ``layout`` whose ``quantized`` tensors are stored as
    ``bits``-bit codes (packed: ``ceil(numel * bits / 8)``) plus fp32 scales (one per row, or
    one per tensor), the rest as in ``layout``; tensors matching ``leave_out`` (a regex) are
    not stored at all (delta from base)."""
    quantized = set(quantized)
    unknown = quantized - set(layout)
    if unknown:
        raise KeyError(f"quantized tensors not in the checkpoint: {sorted(unknown)[:3]}")
    out = {"codes": 0, "scales": 0, "other": 0, "left_to_base": 0}
    for name, entry in layout.items():
        if leave_out is not None and leave_out.search(name):
            out["left_to_base"] += entry["bytes"]
        elif name in quantized:
            numel = math.prod(entry["shape"])
            out["codes"] += math.ceil(numel * bits / 8)
            out["scales"] += (entry["shape"][0] if per_channel else 1) * SCALE_BYTES
        else:
            out["other"] += entry["bytes"]
    out["total"] = out["codes"] + out["scales"] + out["other"]
    return out


# -- scoring ----------------------------------------------------------------------------

@torch.no_grad()
def dev_logits(model, tokenizer, sentences: list[str], batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Logits ``[N, labels]`` of ``sentences`` tokenized as the zoo test does."""
    out = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        out.append(model(**batch).logits.float())
    return torch.cat(out)


def compare(logits: torch.Tensor, base_logits: torch.Tensor, labels: torch.Tensor, base_correct: int) -> dict:
    """Accuracy and how it moved: ``flips`` predictions changed, ``fixed`` of them now right,
    ``broken`` now wrong (``delta_correct = fixed - broken`` for two labels)."""
    predictions, before = logits.argmax(-1), base_logits.argmax(-1)
    correct = int((predictions == labels).sum())
    flipped = predictions != before
    return {
        "correct": correct,
        "total": len(labels),
        "accuracy": correct / len(labels),
        "delta_correct": correct - base_correct,
        "flips": int(flipped.sum()),
        "fixed": int((flipped & (predictions == labels)).sum()),
        "broken": int((flipped & (before == labels)).sum()),
        "max_abs_logit_change": float((logits - base_logits).abs().max()),
    }


def energy_of(model, tokenizer, sentences: list[str]) -> dict:
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        report = energy_report(model, batch["input_ids"], batch["attention_mask"])
    return {"sentences": len(sentences), "sops": report.sops, "macs": report.macs,
            "firing_rate": report.firing_rate, "energy_per_sample_mj": report.energy_per_sample_mj,
            "spike_fed_linears": sorted(op.name for op in report.ops if op.kind == "linear" and op.spike_fed)}


# -- main -------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sst2", help="zoo name or folder (default: the zoo's sst2)")
    parser.add_argument("--dev", default=str(DEV), help="SST-2 dev.tsv")
    parser.add_argument("--limit", type=int, default=None,
                        help="score only the first N dev sentences (a quick check; the check against the zoo record is skipped)")
    parser.add_argument("--schemes", nargs="+", choices=tuple(SCHEMES), default=DEFAULT_SCHEMES)
    parser.add_argument("--controls", nargs="*", choices=tuple(CONTROLS), default=list(CONTROLS),
                        help="perturbations that are no storage format, to size the flips (none: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="default: bench/results/int8_storage.json")
    return parser.parse_args(argv)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> dict:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run(args, argv)


def run(args, argv) -> dict:
    from sj_bert.glue import read_glue_file

    started = time.perf_counter()
    dev = read_glue_file(args.dev, "sst2")
    sentences, labels = list(dev["sentence"]), torch.tensor(dev["label"])
    if args.limit:
        sentences, labels = sentences[:args.limit], labels[:args.limit]
    model = sj_bert.from_pretrained(args.model).eval()
    tokenizer = model.tokenizer
    checkpoint = Path(model.name_or_path) / "model.safetensors"
    layout = safetensors_layout(checkpoint)
    missing = [n for n, _ in model.named_parameters() if n not in layout]
    if missing:
        raise RuntimeError(f"parameters not in {checkpoint}: {missing[:3]}")

    energy_sentences = sentences[:BATCH_SIZE]
    base_logits = dev_logits(model, tokenizer, sentences)
    base_correct = int((base_logits.argmax(-1) == labels).sum())
    expected = recorded_correct(args.model, len(sentences))
    if expected is not None and base_correct != expected:
        raise RuntimeError(f"{args.model} scores {base_correct}/{len(sentences)} here, its zoo record "
                           f"{expected}/{len(sentences)}: not the checkpoint the record describes")
    base_energy = energy_of(model, tokenizer, energy_sentences)
    by_name = sorted(selected(layout, ("spike_fed",)))
    if base_energy["spike_fed_linears"] != sorted(n[: -len(".weight")] for n in by_name):
        raise RuntimeError("the energy report's spike-fed Linears are not the ones SPIKE_FED names")
    print(f"baseline: {base_correct}/{len(labels)} ({time.perf_counter() - started:.0f} s)", flush=True)

    fp16 = storage_bytes(layout, (), 8, True)
    fp16_delta = storage_bytes(layout, (), 8, True, leave_out=LEFT_TO_BASE)
    original = copy.deepcopy(model.state_dict())
    rows = [{
        "scheme": "fp16", "label": "fp16 checkpoint (baseline)", "bits": 16, "per_channel": None,
        "correct": base_correct, "total": len(labels), "accuracy": base_correct / len(labels),
        "delta_correct": 0, "flips": 0, "fixed": 0, "broken": 0, "max_abs_logit_change": 0.0,
        "bytes": fp16, "bytes_delta": fp16_delta, "ratio": 1.0, "ratio_delta": fp16_delta["total"] / fp16["total"],
        "energy": base_energy,
    }]
    controls = []
    for name in [*args.schemes, *args.controls]:
        control = name in CONTROLS
        scheme = CONTROLS[name] if control else SCHEMES[name]
        model.load_state_dict(original)
        errors = apply_scheme(model, scheme)
        quantized = errors.pop("quantized")
        logits = dev_logits(model, tokenizer, sentences)
        row = {"scheme": name, "label": scheme["label"], "bits": scheme.get("bits"),
               "per_channel": scheme.get("per_channel"), "targets": list(scheme["targets"]),
               **compare(logits, base_logits, labels, base_correct), "weights": errors}
        if control:
            row["bits"] = None  # a perturbation, no storage format
            controls.append(row)
        else:
            stored = storage_bytes(layout, quantized, scheme["bits"], scheme["per_channel"])
            delta = storage_bytes(layout, quantized, scheme["bits"], scheme["per_channel"], leave_out=LEFT_TO_BASE)
            rows.append({**row, "bytes": stored, "bytes_delta": delta, "ratio": stored["total"] / fp16["total"],
                         "ratio_delta": delta["total"] / fp16["total"],
                         "energy": {k: v for k, v in energy_of(model, tokenizer, energy_sentences).items()
                                    if k != "spike_fed_linears"}})
        print(f"{name}: {row['correct']}/{row['total']} flips {row['flips']} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    model.load_state_dict(original)

    # the checkpoint folder: the tensors' payload plus the safetensors header (the fp16 file's;
    # a quantized file's header names a few more tensors) plus the other files (tokenizer, config, card)
    header_bytes = checkpoint.stat().st_size - fp16["total"]
    other_files = sum(f.stat().st_size for f in checkpoint.parent.iterdir()
                      if f.is_file() and f.name != "model.safetensors" and not f.name.startswith("."))
    for row in rows:
        row["folder_bytes"] = row["bytes"]["total"] + header_bytes + other_files
        row["folder_bytes_delta"] = row["bytes_delta"]["total"] + header_bytes + other_files
        row["six_folders_delta"] = 6 * row["folder_bytes_delta"]
        row["delta_folders_in_64_mib"] = 64 * 2**20 // row["folder_bytes_delta"]
        row["energy"]["sops_vs_fp16"] = row["energy"]["sops"] / base_energy["sops"] - 1
    print_table(rows, controls)
    result = {
        "bench": "int8_storage",
        "issue": "#12: store spike-fed weights in 8 bits",
        "device": "cpu",
        "device_name": device_name(torch.device("cpu")),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/int8_storage.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])),
        "git_commit": git_commit(),
        "wall_seconds": time.perf_counter() - started,
        "model": args.model,
        "checkpoint_file": str(checkpoint),
        "checkpoint_tensors": len(layout),
        # spikes of channel c carry V_th[c] (spike_amplitude "threshold"): hardware with binary
        # spikes stores W diag(V_th), whose per-row int8 codes equal W's when V_th is one constant
        "spiking": {k: getattr(model.config, k, None) for k in
                    ("coding", "neuron", "v_threshold", "learnable_threshold", "per_channel", "spike_amplitude")},
        "v_threshold_values": sorted({float(v) for n, b in model.named_buffers() if n.endswith("v_threshold")
                                      for v in b.unique()}),
        "spike_fed_matrices": by_name,
        "data": {"file": os.path.relpath(args.dev, REPO), "sentences": len(labels), "full_dev": len(sentences) == 872,
                 "tokenization": "batches of 64, padding=True, truncation=True, max_length=128 (tests/zoo/test_zoo.py)"},
        "method": {
            "quantization": "symmetric fake quant: codes = clamp(round(w / s), -qmax, qmax), qmax = 2**(bits-1) - 1, "
                            "w_hat = codes * s; s = max|w| / qmax per output channel (row) or per tensor, fp32; "
                            "applied to the stored fp16 values; biases, BPSN decays, LayerNorms and untargeted "
                            "tensors keep their stored values; the model runs in fp32",
            "bytes": "tensor payload of model.safetensors (headers excluded): int codes, ceil(numel * bits / 8) "
                     f"(int4 packed two a byte), plus {SCALE_BYTES}-byte scales (one per row or per tensor); other "
                     "tensors at their stored size (fp16)",
            "delta": "bytes_delta: the same with the bert.embeddings.* tensors (word, position, token-type "
                     "embeddings, embeddings LayerNorm) left to the base model, as --delta_from_base stores a "
                     "checkpoint trained with --freeze_embeddings (docs/zoo_storage.md); ratio_delta is against "
                     "the full fp16 payload. The zoo's sst2 itself was trained without frozen embeddings.",
            "flips": "dev sentences whose predicted label differs from the fp16 model's",
            "energy": f"sj_bert.energy.energy_report on the first {len(energy_sentences)} dev sentences "
                      "(0.9 pJ per AC, 4.6 pJ per MAC)",
        },
        "expected_correct": expected,
        "header_bytes": header_bytes,
        "other_files_bytes": other_files,
        "budget_64_mib": 64 * 2**20,
        "results": rows,
        "controls": controls,
        "summary": {
            "schemes_delta_correct": {r["scheme"]: r["delta_correct"] for r in rows[1:]},
            "schemes_flips": {r["scheme"]: r["flips"] for r in rows[1:]},
            "controls_delta_correct": [min((r["delta_correct"] for r in controls), default=None),
                                       max((r["delta_correct"] for r in controls), default=None)],
            "controls_flips": [min((r["flips"] for r in controls), default=None),
                               max((r["flips"] for r in controls), default=None)],
        },
    }
    out = Path(args.out) if args.out else RESULTS / "int8_storage.json"
    write_json(str(out), result)
    print(f"wrote {out}")
    return result


def print_table(rows: list[dict], controls: list[dict] = ()) -> None:
    header = (f"{'scheme':<22}{'correct':>10}{'acc %':>8}{'dcorr':>7}{'flips':>7}{'+/-':>8}{'max|dlogit|':>13}"
              f"{'bytes':>13}{'ratio':>7}{'delta bytes':>13}{'ratio':>7}{'mJ/sample':>11}")
    print(header)
    print("-" * len(header))
    for r in [*rows, *controls]:
        line = (f"{r['scheme']:<22}{r['correct']:>6}/{r['total']:<3}{100 * r['accuracy']:>8.2f}"
                f"{r['delta_correct']:>+7d}{r['flips']:>7}{str(r['fixed']) + '/' + str(r['broken']):>8}"
                f"{r['max_abs_logit_change']:>13.4f}")
        if "bytes" in r:
            line += (f"{r['bytes']['total']:>13,}{r['ratio']:>7.3f}{r['bytes_delta']['total']:>13,}"
                     f"{r['ratio_delta']:>7.3f}{r['energy']['energy_per_sample_mj']:>11.4f}")
        else:
            line += f"{'(control)':>13}"
        print(line)


if __name__ == "__main__":
    main()
