"""Fine-tune SNN-BERT with some kinds of neuron passing on real values: which neurons keep it
from learning a task?

A diagnostic, not a model. ``recipes/finetune.py`` runs as usual (its flags after ``--``), but
while it trains and scores, the neurons of each ``--real`` kind pass on what the ANN's matrices
would read there (their input; GELU of it at the FFN's activation) instead of spikes
(``sj_bert.conversion.real_valued``). If a task that SNN-BERT does not learn (MRPC: the
majority class at any budget tried, ``docs/accuracy.md``) is learned once one kind is real,
that kind's spikes are where the task's information is lost.

``--read potential`` computes what those neurons pass on from their potential (BPSN's forward
and backward leaky integration of the input over neighbouring tokens) instead of their input:
the neuron without its firing. The potential also grows (up to twice the input at tau 2);
``--read average`` divides that growth out (a weighted average of the neighbours). Against the
run without it, that separates what the mixing of tokens loses from what the spikes lose.

    python bench/real_sites.py --real attention.self.neuron --out bench/results/accuracy/x.json -- \\
        --task mrpc --data_dir ../shared/data/glue --model_name_or_path <twin> --output_dir /tmp/x ...

Writes ``--out``: finetune.py's results with ``real_sites`` added. Its ``energy`` report is
left out: the saved model it measures fires at every neuron (the hooks are not part of it),
so it would not describe the model that was scored.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from sj_bert.conversion import NEURON_KINDS, REAL_READS, real_valued
from sj_bert.files import write_json
from sj_bert.modeling.configuration_spiking_bert import is_spiking

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("real_sites.py: give finetune.py's flags after --")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", nargs="+", required=True, choices=NEURON_KINDS,
                        help="the kinds of neuron that pass on real values")
    parser.add_argument("--read", choices=REAL_READS, default="input",
                        help="what their real value is computed from (sj_bert.conversion.real_valued)")
    parser.add_argument("--out", required=True, help="where the results go (JSON)")
    args = parser.parse_args(argv[:split])
    return args, argv[split + 1:]


def main(argv=None) -> dict:
    args, finetune_argv = parse_args(argv)
    if RECIPES not in sys.path:
        sys.path.insert(0, RECIPES)
    import finetune

    load_model = finetune.load_model
    with contextlib.ExitStack() as stack:
        def load_with_real_sites(run_args, num_labels):
            tokenizer, model = load_model(run_args, num_labels)
            if not is_spiking(model):
                raise ValueError("real_sites.py makes some of SNN-BERT's neurons real; --coding ann has none")
            stack.enter_context(real_valued(model, args.real, read=args.read))
            return tokenizer, model

        finetune.load_model = load_with_real_sites
        try:
            results = finetune.main(finetune_argv)
        finally:
            finetune.load_model = load_model
    results = {key: value for key, value in results.items() if key not in ("energy", "energy_samples")}
    read = f" --read {args.read}" if args.read != "input" else ""
    this = f"bench/real_sites.py --real {' '.join(args.real)}{read} --out {args.out} --"
    results = {"bench": "real_sites", "real_sites": args.real, "real_from": args.read, **results,
               "command": results["command"].replace("recipes/finetune.py", this, 1)}
    write_json(args.out, results)
    print({key: value for key, value in results.items() if key.startswith("eval_")})
    return results


if __name__ == "__main__":
    main()
