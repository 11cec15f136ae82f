"""Host time of one BPSN forward+backward through the fused path, with the kernel launches
stubbed out: what the CPU spends per call before any GPU work; and how many tensor ops a
whole model dispatches per pass, SNN-BERT against its ANN twin.

The H200 run (``bench/results/neuron_cuda.json``) found every neuron at SNN-BERT's shapes
taking 1 to 3 ms per step whatever T is: host time, not kernel time. This measures that
host time on any machine, without a GPU: the Triton backend's launchers are replaced by
no-ops (so the buffers hold garbage, and nothing is checked but time), on ``x`` ``[T, B, C]``
with per-channel parameters, as SNN-BERT calls it. Median of interleaved runs.

Model counts: every aten op that reaches a kernel or a view (``TorchDispatchMode``) plus
every fused-kernel launch, in one inference forward (``eval()``, ``inference_mode``) and one
training forward+backward of the ANN twin and of SNN-BERT (individual coding, the zoo's
neuron settings) at the MiniLM-L6 shape, on a tokenizer's three inputs. Among them, the
host-device syncs: ops that on a GPU make the CPU wait for the device (``.item()``,
``bool(t)``, ``.tolist()``, ``nonzero``, bool indexing, ...; :data:`SYNC_OPS`), named with
their caller. A sync stops the CPU from queueing work ahead of the GPU, so a GPU idles
while the host prepares what follows it. The optimizer is left out: on a GPU AdamW runs as a
few multi-tensor kernels whatever the parameter count, on the CPU as a loop per parameter.
When a GPU step is bound by the host, its time follows these counts.

    python bench/host_overhead.py                      # bench/results/host_overhead_cpu.json
    python bench/host_overhead.py --out /tmp/h.json --T 128 --batch 32 --channels 1536
    python bench/host_overhead.py --model_shape none    # the neuron alone
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import subprocess
import time
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sj_bert
import sj_bert.neuron as neuron_module
from sj_bert import BPSN
from sj_bert.files import write_json
from sj_bert.timing import torch_threads

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def stubbed_launches():
    """Within: the Triton launchers are no-ops and CPU tensors take the fused path (the
    originals are put back after, so a test process is left as it was). Yields a dict
    counting the stubbed launches by launcher name."""
    from sj_bert.ops.bpsn import triton as triton_backend

    launches = {"launch_forward": 0, "launch_backward": 0}

    def stub(name):
        def nothing(*args, **kwargs):
            launches[name] = launches.get(name, 0) + 1

        return nothing

    saved = [(triton_backend, name, getattr(triton_backend, name, None))
             for name in ("launch_forward", "launch_backward", "_launch")]
    saved.append((neuron_module, "select_backend", neuron_module.select_backend))
    try:
        for module, name, _ in saved[:3]:
            setattr(module, name, stub(name))  # _launch: what revisions before the op boundary called
        neuron_module.select_backend = lambda device, backend, surrogate, dtype=torch.float32: "triton"
        yield launches
    finally:
        for module, name, original in saved:
            if original is None:
                delattr(module, name)
            else:
                setattr(module, name, original)


#: aten ops that make the host wait for the device when their tensors are on a GPU: each
#: reads a value back (``.item()``, ``bool(t)``, ``int(t)``, ``if t:`` end in
#: ``_local_scalar_dense``) or returns a tensor whose size depends on the data. On the CPU
#: nothing waits, but the op that would is dispatched all the same, so it is counted here.
SYNC_OPS = frozenset({
    "_local_scalar_dense", "is_nonzero", "equal", "allclose",
    "nonzero", "masked_select", "_unique", "_unique2", "unique_dim", "unique_consecutive",
    "unique_dim_consecutive", "bincount",
})
#: ops that sync only with some arguments: see :func:`syncs_with_arguments`
CONDITIONAL_SYNC_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_", "repeat_interleave",
                                  "_to_copy", "copy_"})
#: where a sync is attributed: the innermost caller in these packages, else the innermost outside torch
CALLER_PACKAGES = ("sj_bert", "transformers", "spikingjelly")


def syncs_with_arguments(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether op ``name`` (one of :data:`CONDITIONAL_SYNC_OPS`) syncs with these arguments:
    indexing with a bool mask (a ``nonzero`` inside), ``repeat_interleave`` without
    ``output_size``, a copy from a device to the CPU."""
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])
    if name == "repeat_interleave":
        return isinstance(args[0], torch.Tensor) and kwargs.get("output_size") is None
    source = args[1] if name == "copy_" else args[0]
    target = args[0].device if name == "copy_" else kwargs.get("device")
    return target is not None and torch.device(target).type == "cpu" and source.device.type != "cpu"


def caller() -> str:
    """``package/file.py:line function`` of the innermost frame in :data:`CALLER_PACKAGES`
    (else outside torch and this script): who asked for the op."""
    frames = [f for f in traceback.extract_stack()[:-1]
              if "/torch/" not in f.filename and f.filename != __file__ and "/contextlib.py" not in f.filename]
    ours = [f for f in frames if any(f"/{package}/" in f.filename for package in CALLER_PACKAGES)]
    frame = (ours or frames or traceback.extract_stack()[-1:])[-1]
    path = Path(frame.filename).parts
    tail = next((path[i:] for i in range(len(path) - 1, -1, -1) if path[i] in CALLER_PACKAGES), path[-1:])
    return f"{'/'.join(tail)}:{frame.lineno} {frame.name}"


class DispatchCount(TorchDispatchMode):
    """Counts the aten ops dispatched below autograd while active, and among them the ones
    that sync (:data:`SYNC_OPS`, :func:`syncs_with_arguments`), by ``(op, caller)``.
    ``Tensor.tolist``/``numpy`` of a CPU tensor dispatch no copy, so they are counted where
    they are called (on a GPU tensor its copy to the CPU is the op counted)."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.syncs: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        name = func._schema.name.split("::")[-1]
        if name in SYNC_OPS or (name in CONDITIONAL_SYNC_OPS and syncs_with_arguments(name, args, kwargs)):
            self.syncs[(str(func), caller())] += 1
        return func(*args, **kwargs)

    def __enter__(self):
        self._host_reads = patch_host_reads(self.syncs)
        self._host_reads.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._host_reads.__exit__(*exc)

    def sync_list(self) -> list[dict]:
        """``[{"op", "where", "count"}]``, most frequent first."""
        return [{"op": op, "where": where, "count": count} for (op, where), count in self.syncs.most_common()]


@contextlib.contextmanager
def patch_host_reads(syncs: collections.Counter):
    """Within: ``Tensor.tolist``/``Tensor.numpy`` of a CPU tensor add to ``syncs`` (as
    ``Tensor.tolist`` etc.), then do what they did."""
    saved = {name: torch.Tensor.__dict__.get(name) for name in ("tolist", "numpy")}

    def counted(name):
        original = getattr(torch._C.TensorBase, name)

        def read(self, *args, **kwargs):
            if self.device.type == "cpu":
                syncs[(f"Tensor.{name}", caller())] += 1
            return original(self, *args, **kwargs)

        return read

    try:
        for name in saved:
            setattr(torch.Tensor, name, counted(name))
        yield
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def model_counts(shape_name: str, batch: int, length: int) -> dict:
    """Ops per pass of the ANN twin and SNN-BERT (see the module docstring), launches stubbed."""
    from transformers import BertConfig, BertForSequenceClassification

    from sj_bert import SpikingBertConfig, SpikingBertForSequenceClassification, offline_bert
    from sj_bert.zoo import spiking_settings

    if shape_name == "minilm":
        minilm = BertConfig.from_pretrained(offline_bert())
        shape = {k: getattr(minilm, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                  "num_attention_heads", "intermediate_size")}
    else:
        shape = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    settings = {k: v for k, v in spiking_settings("sst2").items() if k not in ("coding", "time_steps")}
    generator = torch.Generator().manual_seed(0)
    # what a tokenizer returns (return_tensors="pt"), as bench/inference.py passes it
    inputs = {"input_ids": torch.randint(1, shape["vocab_size"], (batch, length), generator=generator),
              "token_type_ids": torch.zeros(batch, length, dtype=torch.long),
              "attention_mask": torch.ones(batch, length, dtype=torch.long)}
    labels = torch.zeros(batch, dtype=torch.long)
    models = {
        "ann": BertForSequenceClassification(BertConfig(**shape, num_labels=2)),
        "snn": SpikingBertForSequenceClassification(
            SpikingBertConfig(**shape, num_labels=2, coding="individual", **settings)),
    }
    counts: dict = {}
    with stubbed_launches() as launches:
        for name, model in models.items():
            def inference():
                model.eval()
                with torch.inference_mode():
                    model(**inputs)

            def training():
                model.train()
                model(**inputs, labels=labels).loss.backward()
                model.zero_grad(set_to_none=True)

            for kind, run in (("inference forward", inference), ("training forward+backward", training)):
                run()  # warm: caches built, nothing lazy left
                launches.update(launch_forward=0, launch_backward=0)
                with DispatchCount() as dispatched:
                    run()
                fused = launches["launch_forward"] + launches["launch_backward"]
                counts.setdefault(kind, {})[name] = {"aten_ops": dispatched.ops, "fused_launches": fused,
                                                     "total": dispatched.ops + fused,
                                                     "syncs": sum(dispatched.syncs.values()),
                                                     "sync_ops": dispatched.sync_list()}
    for values in counts.values():
        values["snn/ann"] = values["snn"]["total"] / values["ann"]["total"]
    return {"shape": shape_name, "config": shape, "batch": batch, "length": length, "snn_settings": settings,
            "counts": counts}


def source_revision() -> str:
    """The git commit of the sj_bert measured (``+dirty`` with local changes)."""
    root = Path(sj_bert.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "sj_bert"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per case (median reported)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--model_shape", choices=("minilm", "tiny", "none"), default="minilm",
                        help="shape of the model-level op counts (none: skip them)")
    parser.add_argument("--model_batch", type=int, default=8)
    parser.add_argument("--model_length", type=int, default=32)
    parser.add_argument("--out", default=str(RESULTS / "host_overhead_cpu.json"))
    args = parser.parse_args(argv)
    for name in ("T", "batch", "channels", "repeats", "model_batch", "model_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    # the host work is one thread's; keep the machine's load out
    with torch_threads(1):
        with stubbed_launches():
            results = measure(args)
        models = None if args.model_shape == "none" else model_counts(args.model_shape, args.model_batch,
                                                                        args.model_length)
    for name, us in results.items():
        print(f"BPSN {name}, launches stubbed, x [{args.T}, {args.batch}, {args.channels}]: {us:.0f} us")
    if models:
        print(f"ops per pass, {models['shape']} shape, batch {models['batch']}, length {models['length']} "
              "(aten ops + fused launches):")
        for kind, values in models["counts"].items():
            ann, snn = values["ann"], values["snn"]
            print(f"  {kind}: ANN {ann['total']}, SNN-BERT {snn['total']} ({snn['fused_launches']} fused launches), "
                  f"SNN/ANN {values['snn/ann']:.2f}x; host-device syncs: ANN {ann['syncs']}, SNN-BERT {snn['syncs']}")
            for model, per_model in (("ANN", ann), ("SNN-BERT", snn)):
                for sync in per_model["sync_ops"]:
                    print(f"    {model} sync: {sync['count']} x {sync['op']} from {sync['where']}")
    result = {
        "bench": "host_overhead",
        "device": "cpu",
        "sj_bert_revision": source_revision(),
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0],
        "shape": {"T": args.T, "batch": args.batch, "channels": args.channels},
        "method": "median wall time (one torch thread) of BPSN(channels=C, channel_dim=-1) through the Triton "
                  "backend's host code with launch_forward/launch_backward replaced by no-ops; "
                  "forward+backward resets x.grad each call; the two cases interleaved",
        "repeats": args.repeats,
        "host_us": results,
        "model_method": "aten ops dispatched (TorchDispatchMode) plus fused-kernel launches in one pass, after a "
                        "warm-up pass; training: forward with loss and backward, no optimizer; inputs as a "
                        "tokenizer gives them: input_ids, token_type_ids, attention_mask",
        "sync_method": "syncs: the dispatched ops that make the host wait for a GPU (read a value back or size "
                       "their output by the data; on the CPU nothing waits, the op is counted all the same), "
                       "plus Tensor.tolist/numpy calls, each with its innermost caller in "
                       f"{'/'.join(CALLER_PACKAGES)}",
        "sync_ops_counted": sorted(SYNC_OPS) + [f"{op} (bool index, no output_size, or to the CPU)"
                                                for op in sorted(CONDITIONAL_SYNC_OPS)] + ["Tensor.tolist",
                                                                                             "Tensor.numpy"],
        "models": models,
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


def measure(args) -> dict:
    """Median microseconds per call of each case."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.T, args.batch, args.channels, generator=generator).requires_grad_()
    grad = torch.randn(args.T, args.batch, args.channels, generator=generator)
    mask = torch.ones(args.T, args.batch, dtype=torch.bool)
    node = BPSN(channels=args.channels, channel_dim=-1)

    def train_step():
        x.grad = None
        node.reset()
        node(x, mask).backward(grad)

    def inference_step():
        with torch.no_grad():
            node.reset()
            node(x, mask)

    steps = {"forward+backward": train_step, "forward (no_grad)": inference_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    for _ in range(args.repeats):
        for name, step in steps.items():  # interleaved: machine load hits both alike
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1e6 * statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    main()
