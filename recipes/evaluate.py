#!/usr/bin/env python
"""Score a fine-tuned checkpoint (BERT or SNN-BERT) on a GLUE task's dev set, or on any GLUE file.

    python recipes/evaluate.py --model_name_or_path outputs/sst2 --data_dir shared/data/glue
    python recipes/evaluate.py --model_name_or_path sst2 --data_dir shared/data/glue   # a zoo checkpoint
    python recipes/evaluate.py --model_name_or_path outputs/mnli --task mnli --file my_dev.tsv
    accelerate launch recipes/evaluate.py --model_name_or_path outputs/rte --output_file rte_dev.json
    python recipes/evaluate.py --model_name_or_path sst2 --data_dir shared/data/glue --length_buckets 10 20 30 45

``--length_buckets`` also scores each split by tokenized length, the number of time steps an
SNN-BERT with individual coding runs for (``eval_accuracy_len_10_20``, ...).

The task defaults to the one the checkpoint was fine-tuned on. Results use finetune.py's names
(``eval_accuracy``, ``eval_samples``, ``_mm`` for MNLI mismatched); printed as JSON and, with
``--output_file``, written there.
"""

from __future__ import annotations

import argparse
import json

import _common
from sj_bert import glue, zoo
from sj_bert.files import write_json
from sj_bert.modeling.modeling_bi_encoder import pair_encoding


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Score a checkpoint on a GLUE dev set or GLUE-format file")
    parser.add_argument("--model_name_or_path", required=True, help="checkpoint: a zoo name (sst2), a folder (save_pretrained output) or a hub id")
    _common.add_data_args(parser, task_required=False)
    parser.add_argument("--file", default=None, help="a labelled GLUE-format TSV to score instead of the dev split")
    parser.add_argument("--output_file", default=None, help="also write the results here (JSON)")
    parser.add_argument("--length_buckets", type=_common.positive_int, nargs="+", default=None, metavar="TOKENS",
                        help="also score each split by tokenized length (the time steps under individual coding): "
                             "edges such as 10 20 30 45 give eval_<metric>_len_0_10, ..._len_45_plus")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even where a GPU is available")
    args = parser.parse_args(argv)
    edges = args.length_buckets or []
    if any(b <= a for a, b in zip(edges, edges[1:])):
        parser.error(f"--length_buckets: expected increasing token counts, got {' '.join(map(str, edges))}")
    return args


def main(argv=None):
    args = parse_args(argv)
    accelerator = _common.make_accelerator(args.cpu)
    tokenizer, model = zoo.load_checkpoint(args.model_name_or_path)
    task = glue.checkpoint_task(args.task_name, model.config)
    with accelerator.main_process_first():
        raw = glue.load_eval_data(task, args.data_dir, args.file, args.max_eval_samples)
        processed = glue.tokenize(
            raw, task, tokenizer, args.max_length, args.pad_to_max_length, glue.label_mapping(model.config, task),
            pair_encoding=pair_encoding(model),
        )
    splits = dict(processed)
    if args.length_buckets:
        for split in processed:
            splits.update(glue.length_buckets(processed, split, args.length_buckets))
    collate = glue.make_collator(tokenizer, args.pad_to_max_length, accelerator.mixed_precision, pair_encoding(model))
    dataloaders = glue.eval_dataloaders(splits, list(splits), collate, args.per_device_eval_batch_size)
    model, *prepared = accelerator.prepare(model, *dataloaders.values())
    results = {"task": task, "model": args.model_name_or_path, "data": args.file or args.data_dir or "hub"}
    results.update(glue.evaluate(model, dict(zip(dataloaders, prepared)), accelerator, task))
    if accelerator.is_main_process:
        print(json.dumps(results, indent=2))
        if args.output_file is not None:
            write_json(args.output_file, results)
    return results


if __name__ == "__main__":
    main()
