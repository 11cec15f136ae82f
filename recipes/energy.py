#!/usr/bin/env python
"""Print and save the energy report of an SNN-BERT checkpoint on N dev sentences.

    python recipes/energy.py --model_name_or_path outputs/sst2 --data_dir shared/data/glue --num_samples 64

Firing rates per neuron layer, synaptic (AC) and dense (MAC) operations and energy per sample at
45 nm, next to the ANN BERT of the same shape (``sj_bert.energy.energy_report``), measured on the
first ``--num_samples`` sentences of the task's dev split (or of ``--file``). The report's
``to_dict()`` goes to ``--output_file``, by default ``energy.json`` in the checkpoint folder.
"""

from __future__ import annotations

import argparse
import os

import torch

import _common
from sj_bert import glue, zoo
from sj_bert.energy import energy_on_dataset
from sj_bert.files import write_json
from sj_bert.modeling.configuration_spiking_bert import MODEL_TYPE, is_spiking
from sj_bert.modeling.modeling_bi_encoder import pair_encoding


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Energy report of an SNN-BERT checkpoint on GLUE dev sentences")
    parser.add_argument("--model_name_or_path", required=True, help="SNN-BERT checkpoint: a zoo name (sst2), a folder or a hub id")
    _common.add_data_args(parser, task_required=False, eval_flags=False)
    parser.add_argument("--file", default=None, help="a GLUE-format TSV to take the sentences from")
    parser.add_argument("--num_samples", type=_common.positive_int, default=32, help="dev sentences to measure on (one batch)")
    parser.add_argument("--device", default=None, help="where to run the model; default: cuda if available, else cpu")
    parser.add_argument("--output_file", default=None, help="JSON path; default: <checkpoint>/energy.json")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tokenizer, model = zoo.load_checkpoint(args.model_name_or_path)
    if not is_spiking(model):
        raise TypeError(
            f"{args.model_name_or_path} is a {type(model).__name__} ({model.config.model_type}); "
            f"the energy report needs an SNN-BERT checkpoint (model_type {MODEL_TYPE})"
        )
    task = glue.checkpoint_task(args.task_name, model.config)
    raw = glue.load_eval_data(task, args.data_dir, args.file, args.num_samples)
    processed = glue.tokenize(raw, task, tokenizer, args.max_length, args.pad_to_max_length,
                              pair_encoding=pair_encoding(model))
    collate = glue.make_collator(tokenizer, args.pad_to_max_length, pair_encoding=pair_encoding(model))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = energy_on_dataset(model.to(device), next(iter(processed.values())), collate, args.num_samples)
    print(report.format())
    output_file = args.output_file
    if output_file is None and os.path.isdir(args.model_name_or_path):
        output_file = os.path.join(args.model_name_or_path, "energy.json")
    if output_file is not None:
        write_json(output_file, {"task": task, "model": args.model_name_or_path, **report.to_dict()})
        print(f"\nsaved to {output_file}")
    return report


if __name__ == "__main__":
    main()
