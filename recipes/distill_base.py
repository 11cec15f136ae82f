#!/usr/bin/env python
"""Distil a spiking base from an ANN BERT on unlabelled text, before any task.

SNN-BERT built from BERT starts near chance: its binary spikes keep little of what BERT's
matrices read (``bench/hidden_drift.py``; ``docs/accuracy.md``), so every task run has to
relearn the encoder from its own labels, which SST-2's 67k sentences allow and MRPC's 3.7k pairs
do not. This recipe is the first stage of SpikeBERT and SpikingBERT (TinyBERT's "general
distillation"): SNN-BERT, built from ``--teacher`` (default: the offline MiniLM) with the
recipe's individual-coding defaults, learns to reproduce the teacher's every encoder layer
output (``--kd_hidden_weight``) and, optionally, its attention maps (``--kd_attention_weight``)
at real tokens and the direction of its sentence embeddings, the last layer mean-pooled
(``--kd_pooled_weight``: what a bi-encoder, ``finetune.py --pair_encoding bi``, compares). It
learns on text only: the train sentences of the GLUE tasks in ``--tasks``, whose labels are never
read, and/or ``--text_file``. A pair task gives its pairs as BERT reads them, or with
``--pair_encoding bi`` each sentence alone, as a bi-encoder reads it. Dev and test sets are
never read. Then fine-tune from it as from any SNN-BERT checkpoint:

    python recipes/distill_base.py --data_dir ../shared/data/glue --output_dir outputs/base
    python recipes/finetune.py --task mrpc --data_dir ../shared/data/glue \\
        --model_name_or_path outputs/base --neuron_lr 1e-2 --output_dir outputs/mrpc

``--eval_texts N`` texts are held out of training (a seeded draw) and scored after every epoch
and at the end: the same loss terms, each layer's mean cosine to the teacher's output
(``bench/hidden_drift.py``'s measure; 1 is the teacher itself) and the mean cosine of the
sentence embeddings.

Like ``finetune.py`` (whose helpers it uses): ``accelerate launch``, mixed precision, gradient
accumulation, ``--max_minutes``, ``--checkpointing_steps`` and ``--resume_from_checkpoint
latest``, a run manifest that keeps other runs out of ``--output_dir``. Writes there the
SpikingBertModel (``save_pretrained``) and tokenizer, a card ``README.md`` and, last,
``all_results.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

import datasets
import torch
import transformers
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, SchedulerType, get_scheduler

import _common
import _distill
import finetune
import sj_bert
from sj_bert import glue, zoo
from sj_bert.energy import energy_on_dataset
from sj_bert.files import read_json, write_json, write_text
from sj_bert.modeling.configuration_spiking_bert import is_spiking

logger = get_logger(__name__)

SCRIPT = "recipes/distill_base.py"
# The settings that define a run (finetune.RUN_FIELDS' counterpart): how long it runs, where
# and how often it saves, and what is measured are left out.
RUN_FIELDS = (
    "teacher", "model_name_or_path", "data_dir", "tasks", "text_file", "max_train_samples", "eval_texts",
    "max_length", "pad_to_max_length", "per_device_train_batch_size", "gradient_accumulation_steps",
    "learning_rate", "weight_decay", "lr_scheduler_type", "num_warmup_steps", "seed", *finetune.SNN_FLAGS,
    "neuron_lr", "freeze_embeddings", "kd_hidden_weight", "kd_attention_weight", "kd_pooled_weight", "pair_encoding",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Distil a spiking base from an ANN BERT on unlabelled text")
    _common.add_data_args(parser, task_required=False, eval_flags=False, task_flag=False)  # --tasks: the texts
    parser.add_argument("--tasks", nargs="+", default=list(glue.TASK_TO_KEYS),
                        help="GLUE tasks whose train texts are distilled on (labels unused); a task without "
                             f"train data is skipped with the reason. Default: all ({' '.join(glue.TASK_TO_KEYS)})")
    parser.add_argument("--no_tasks", dest="tasks", action="store_const", const=[],
                        help="no GLUE texts: --text_file only")
    parser.add_argument("--text_file", default=None, help="more text: a UTF-8 file, one text per line")
    parser.add_argument("--pair_encoding", choices=glue.PAIR_ENCODINGS, default=None,
                        help="how pair tasks give their texts. cross (default): each pair as BERT reads it, "
                             "[CLS] a [SEP] b [SEP]; bi: each sentence alone, as a bi-encoder reads it "
                             "(two texts a pair)")
    parser.add_argument("--teacher", default=None,
                        help="the ANN BERT to distil (folder or hub id); default: the offline MiniLM-L6-H384")
    parser.add_argument("--model_name_or_path", default=None,
                        help="where the student starts: a BERT (made SNN-BERT with the recipe's defaults) or an "
                             "SNN-BERT checkpoint; default: the teacher")
    parser.add_argument("--max_train_samples", type=_common.positive_int, default=None,
                        help="train on the first N texts of the shuffled pool only")
    parser.add_argument("--eval_texts", type=_common.positive_int, default=256,
                        help="texts held out of training and scored after every epoch (default 256)")
    parser.add_argument("--per_device_train_batch_size", type=_common.positive_int, default=64)
    parser.add_argument("--per_device_eval_batch_size", type=_common.positive_int, default=64)
    parser.add_argument("--learning_rate", type=_common.positive_float, default=1e-4)
    parser.add_argument("--weight_decay", type=_common.non_negative_float, default=0.0)
    parser.add_argument("--num_train_epochs", type=_common.positive_int, default=1)
    parser.add_argument("--max_train_steps", type=_common.positive_int, default=None,
                        help="overrides --num_train_epochs")
    parser.add_argument("--gradient_accumulation_steps", type=_common.positive_int, default=1)
    parser.add_argument("--max_minutes", type=_common.non_negative_float, default=None,
                        help="wall-clock budget from the script's start: training stops cleanly when it is spent "
                             "(see finetune.py)")
    parser.add_argument("--lr_scheduler_type", type=SchedulerType, default="linear",
                        choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                 "constant_with_warmup"])
    parser.add_argument("--num_warmup_steps", type=_common.non_negative_int, default=0)
    parser.add_argument("--output_dir", required=True, help="where the base, its card, results and checkpoints go")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace another run in --output_dir")
    parser.add_argument("--seed", type=int, default=0, help="the draw of held-out texts, the shuffle, dropout")
    parser.add_argument("--checkpointing_steps", type=_common.positive_int, default=None,
                        help="save the state every N optimizer steps (and where --max_minutes stops it)")
    parser.add_argument("--resume_from_checkpoint", default=None,
                        help='a step_N folder, or "latest" in --output_dir')
    parser.add_argument("--cpu", action="store_true", help="run on CPU even where a GPU is available")
    parser.add_argument("--energy_samples", type=_common.positive_int, default=32,
                        help="held-out texts the final firing rate and energy are measured on")
    finetune.add_spiking_args(parser, ann=False)
    parser.add_argument("--kd_hidden_weight", type=_common.non_negative_float, default=1.0,
                        help="weight of the MSE between the student's and the teacher's encoder layer outputs at "
                             "real tokens (default 1)")
    parser.add_argument("--kd_attention_weight", type=_common.non_negative_float, default=0.0,
                        help="weight of KL(teacher || student) of every layer's softmax attention map (default 0)")
    # None, not 0: a run from before the flag resumes (finetune.run_differences)
    parser.add_argument("--kd_pooled_weight", type=_common.non_negative_float, default=None,
                        help="weight of 1 - cos between the student's and the teacher's sentence embeddings, the "
                             "last layer mean-pooled over real tokens (default: off)")
    args = parser.parse_args(argv)
    args.tasks = [glue.check_task(task) for task in args.tasks]
    if not args.tasks and args.text_file is None:
        parser.error("no text to distil on: give --tasks, --text_file or both")
    if args.text_file is not None and not os.path.isfile(args.text_file):
        parser.error(f"--text_file: no such file: {args.text_file}")
    if args.kd_hidden_weight == 0 and args.kd_attention_weight == 0 and not args.kd_pooled_weight:
        parser.error("--kd_hidden_weight, --kd_attention_weight and --kd_pooled_weight are all 0: nothing to distil")
    if args.pair_encoding == "cross":
        args.pair_encoding = None  # the default, recorded as unset: runs from before the flag resume either way
    if args.overwrite_output_dir and args.resume_from_checkpoint == "latest":
        parser.error("--overwrite_output_dir removes the checkpoints that --resume_from_checkpoint latest would resume")
    for flag in finetune.CALIBRATION_FLAGS:  # finetune.apply_recipe_defaults reads them: finetune.py's only
        setattr(args, flag, None)
    return args


def read_text_file(path: str):
    """``{"text": [...]}`` of a UTF-8 file's non-blank lines (stripped) as a ``datasets.Dataset``.
    :raises ValueError: naming the file, when it is not UTF-8 or holds no text"""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as error:
        raise ValueError(f"--text_file {path} is not UTF-8 text ({error})") from error
    texts = [line for line in lines if line]
    if not texts:
        raise ValueError(f"--text_file {path} holds no text (every line is blank)")
    return datasets.Dataset.from_dict({"text": texts})


def load_texts(args, tokenizer):
    """The tokenized pool (``input_ids``, ``attention_mask``, ``token_type_ids``) and a summary:
    ``{"texts": {source: count}, "skipped": {task: reason}}``. Pair tasks give their pairs as
    BERT reads them (``[CLS] a [SEP] b [SEP]``), or with ``--pair_encoding bi`` each sentence
    alone (first every pair's first sentence, then every second one; token types all 0, the
    encoder's default)."""
    parts, counts, skipped = [], {}, {}
    for task in args.tasks:
        try:
            raw = glue.load_glue(task, args.data_dir, split="train")
        except FileNotFoundError as error:
            skipped[task] = f"no train data ({error})"
            continue
        apart = args.pair_encoding == "bi" and glue.is_pair_task(task)
        tokenized = glue.tokenize(raw, task, tokenizer, args.max_length, args.pad_to_max_length,
                                  pair_encoding="bi" if apart else "cross")["train"].remove_columns("labels")
        if apart:
            tokenized = datasets.concatenate_datasets([
                tokenized.select_columns([f"input_ids_{side}", f"attention_mask_{side}"]).rename_columns(
                    {f"input_ids_{side}": "input_ids", f"attention_mask_{side}": "attention_mask"})
                for side in ("a", "b")])
        parts.append(tokenized)
        counts[task] = len(tokenized)
    if args.text_file is not None:
        padding = "max_length" if args.pad_to_max_length else False
        tokenized = read_text_file(args.text_file).map(
            lambda rows: tokenizer(rows["text"], padding=padding, max_length=args.max_length, truncation=True,
                                   return_attention_mask=True),
            batched=True, remove_columns=["text"], desc="Running tokenizer on --text_file",
        )
        parts.append(tokenized)
        counts["text_file"] = len(tokenized)
    if not parts:
        raise ValueError(f"no text to distil on: none of --tasks {' '.join(args.tasks)} has train data in "
                         f"--data_dir {args.data_dir} ({'; '.join(f'{t}: {r}' for t, r in skipped.items())})")
    columns = set.intersection(*(set(part.column_names) for part in parts))
    parts = [part.remove_columns(sorted(set(part.column_names) - columns)) for part in parts]
    # the tokenizer's int widths differ by input form; concatenation needs one
    parts = [part if part.features == parts[0].features else part.cast(parts[0].features) for part in parts]
    return datasets.concatenate_datasets(parts), {"texts": counts, "skipped": skipped}


def split_pool(pool, args):
    """``(train, held_out)``: ``--eval_texts`` drawn with ``--seed``, the rest shuffled by it and
    cut to ``--max_train_samples``. :raises ValueError: when nothing would be left to train on"""
    if len(pool) <= args.eval_texts:
        raise ValueError(f"--eval_texts {args.eval_texts} would hold out all {len(pool)} texts: nothing to train on")
    pool = pool.shuffle(seed=args.seed)
    held_out = pool.select(range(args.eval_texts))
    train = glue.first_rows(pool.select(range(args.eval_texts, len(pool))), args.max_train_samples)
    return train, held_out


def load_models(args, device):
    """``(tokenizer, student, teacher)``: the teacher a frozen ANN ``BertModel`` (eager attention
    when its maps are distilled), the student SNN-BERT's ``SpikingBertModel``."""
    teacher_path = zoo.resolve_checkpoint(args.teacher, "--teacher")
    if is_spiking(transformers.AutoConfig.from_pretrained(teacher_path)):
        raise ValueError(f"--teacher {args.teacher} is SNN-BERT; the teacher must be an ANN BERT")
    teacher = zoo.load_pretrained(transformers.AutoModel, teacher_path, "--teacher", dtype=torch.float32,
                                  **finetune.map_attention(args))
    teacher.requires_grad_(False)
    path = zoo.resolve_checkpoint(args.model_name_or_path, "--model_name_or_path")
    snn = finetune.apply_recipe_defaults(args, path)
    student = zoo.load_pretrained(sj_bert.SpikingBertModel, path, "--model_name_or_path", dtype=torch.float32, **snn)
    tokenizer = zoo.load_pretrained(AutoTokenizer, path, "--model_name_or_path")
    _distill.check_layer_terms(student, teacher, args.teacher, args.kd_hidden_weight > 0, args.kd_attention_weight > 0)
    return tokenizer, student, teacher.eval().to(device)


def distillation_terms(student, teacher, batch, args, accelerator):
    """One batch through both models: ``(outputs, targets, terms)``, ``terms`` the ``[hidden,
    attention, pooled]`` loss terms (0 where a term is off). The teacher runs without gradients."""
    maps = args.kd_attention_weight > 0
    outputs = student(**batch, output_hidden_states=True, output_attentions=maps)
    with torch.no_grad(), accelerator.autocast():
        targets = teacher(**batch, output_hidden_states=True, output_attentions=maps)
    mask = batch["attention_mask"]
    hidden = _distill.hidden_distillation_loss(outputs.hidden_states, targets.hidden_states, mask)
    attention = (_distill.attention_distillation_loss(outputs.attentions, targets.attentions, mask)
                 if maps else torch.zeros_like(hidden))
    pooled = (_distill.pooled_distillation_loss(outputs.last_hidden_state, targets.last_hidden_state, mask)
              if args.kd_pooled_weight else torch.zeros_like(hidden))
    return outputs, targets, torch.stack([hidden, attention, pooled])


def weighted_loss(terms: torch.Tensor, args) -> torch.Tensor:
    """What is optimized: the ``[hidden, attention, pooled]`` terms times their weights."""
    pooled_weight = args.kd_pooled_weight or 0.0  # None: off
    return args.kd_hidden_weight * terms[0] + args.kd_attention_weight * terms[1] + pooled_weight * terms[2]


@torch.no_grad()
def layer_cosines(student_states, teacher_states, attention_mask) -> torch.Tensor:
    """``[layers]`` sums over real tokens of each encoder layer's cosine between student and
    teacher outputs (``*_states``: embeddings first, then ``[B, L, D]`` per layer)."""
    mask = attention_mask.bool()
    return torch.stack([torch.nn.functional.cosine_similarity(s.float(), t.float(), dim=-1)[mask].sum()
                        for s, t in zip(student_states[1:], teacher_states[1:])])


@torch.no_grad()
def score_held_out(student, teacher, loader, args, accelerator) -> dict:
    """The held-out texts' mean loss terms (per batch), per-layer cosine (per real token) and
    sentence-embedding cosine (per text)."""
    was_training = student.training
    student.eval()
    terms, cosines, tokens, pooled, texts, batches = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    for batch in loader:
        outputs, targets, batch_terms = distillation_terms(student, teacher, batch, args, accelerator)
        mask = batch["attention_mask"]
        terms = terms + batch_terms
        cosines = cosines + layer_cosines(outputs.hidden_states, targets.hidden_states, mask)
        tokens = tokens + mask.sum().float()
        pooled = pooled + _distill.pooled_cosines(outputs.last_hidden_state, targets.last_hidden_state, mask).sum()
        texts = texts + float(mask.shape[0])
        batches += 1
    student.train(was_training)
    terms = accelerator.reduce(terms / batches, reduction="mean").tolist()
    cosines = (accelerator.reduce(cosines, reduction="sum") / accelerator.reduce(tokens, reduction="sum")).tolist()
    texts = accelerator.reduce(torch.tensor(texts, device=accelerator.device), reduction="sum")
    pooled = (accelerator.reduce(pooled, reduction="sum") / texts).item()
    return {"eval_hidden_loss": terms[0], **({"eval_attention_loss": terms[1]} if args.kd_attention_weight > 0 else {}),
            **({"eval_pooled_loss": terms[2]} if args.kd_pooled_weight else {}),
            "eval_cosine_by_layer": [round(c, 4) for c in cosines], "eval_pooled_cosine": round(pooled, 4)}


def base_card(results: dict, config, energy_text: str) -> str:
    """The base's model card: what it is, what it learned from, how close it came, how to use it."""
    texts = ", ".join(f"{source} {count:,}" for source, count in results["texts"].items())
    if results.get("pair_encoding") == "bi":
        texts += " (each sentence of a pair a text of its own)"
    cut = f" (cut by the budget: {results['stop_reason']})" if results["stopped_early"] else ""
    teacher = results["teacher"]
    if teacher == sj_bert.offline_bert():
        teacher = "MiniLM-L6-H384 (sentence-transformers/all-MiniLM-L6-v2, offline copy)"
    return "\n".join([
        "---", "library_name: sj-bert", "tags: [spiking-neural-network, snn-bert, distillation]", "---", "",
        "# SNN-BERT base, distilled from an ANN BERT on unlabelled text", "",
        f"SNN-BERT ({config.coding} coding, {config.neuron}) trained to reproduce the encoder layer outputs of "
        f"`{teacher}` at real tokens, with no label: {results['train_steps']} steps{cut} on the train "
        f"texts of {texts} ({results['held_out_texts']} held out). It has no task head: fine-tune it with "
        "`recipes/finetune.py --model_name_or_path <this folder>`.", "",
        "| held out | value |", "|---|---|",
        f"| hidden-state MSE | {results['eval_hidden_loss']:.4f} |",
        f"| cosine to the teacher, by layer | {', '.join(f'{c:.3f}' for c in results['eval_cosine_by_layer'])} |",
        "| cosine to the teacher's sentence embeddings (last layer, mean-pooled) | "
        f"{results['eval_pooled_cosine']:.3f} |",
        "", "```", energy_text.rstrip(), "```", "", "Command:", "", "```bash", results["command"], "```", "",
    ])


def main(argv=None):
    started = finetune.wall_clock()
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    accelerator = _common.make_accelerator(
        args.cpu, gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if not accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    set_seed(args.seed)
    args.teacher = args.teacher or sj_bert.offline_bert()
    args.model_name_or_path = args.model_name_or_path or args.teacher
    for flag in ("teacher", "model_name_or_path"):  # a typo fails before any writing
        zoo.resolve_checkpoint(getattr(args, flag), f"--{flag}")
    manifest = finetune.run_manifest(args, accelerator, SCRIPT, RUN_FIELDS)
    checkpoint = finetune.prepare_output_dir(args, accelerator, manifest)

    tokenizer, model, teacher = load_models(args, accelerator.device)
    if args.freeze_embeddings:
        model.embeddings.requires_grad_(False)
    with accelerator.main_process_first():
        pool, sources = load_texts(args, tokenizer)
    for task, reason in sources["skipped"].items():
        logger.warning(f"--tasks {task}: skipped, {reason}")
    train, held_out = split_pool(pool, args)
    collate = glue.make_collator(tokenizer, args.pad_to_max_length, accelerator.mixed_precision)
    train_dataloader = DataLoader(train, shuffle=True, collate_fn=collate, batch_size=args.per_device_train_batch_size,
                                  generator=torch.Generator())
    eval_dataloader = DataLoader(held_out, collate_fn=collate, batch_size=args.per_device_eval_batch_size,
                                 generator=torch.Generator())
    optimizer = torch.optim.AdamW(finetune.parameter_groups(model, args), lr=args.learning_rate)
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader)

    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    else:
        args.num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(args.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=args.num_warmup_steps,
                                 num_training_steps=args.max_train_steps)
    accelerator.register_for_checkpointing(lr_scheduler)
    logger.info(f"distilling {args.teacher} into SNN-BERT on {len(train):,} texts "
                f"({', '.join(f'{s} {n:,}' for s, n in sources['texts'].items())}), {len(held_out)} held out; "
                f"{args.max_train_steps} steps")

    completed_steps, starting_epoch, resume_batches = 0, 0, 0
    if checkpoint is not None:
        accelerator.print(f"Resumed from checkpoint: {checkpoint}")
        accelerator.load_state(checkpoint)
        state = read_json(os.path.join(checkpoint, finetune.STATE_FILE))
        completed_steps, starting_epoch = state["completed_steps"], state["epoch"]
        resume_batches = state["batches_in_epoch"]

    def save_checkpoint(epoch: int, batches_seen: int) -> None:
        finetune.write_checkpoint(accelerator, args.output_dir, f"step_{completed_steps}", manifest, completed_steps,
                                  epoch, batches_seen, len(train_dataloader))

    progress_bar = tqdm(range(args.max_train_steps), disable=not accelerator.is_local_main_process)
    progress_bar.update(completed_steps)
    run_sums = torch.zeros(4, device=accelerator.device)  # loss, hidden term, attention term, pooled term
    run_batches = 0
    deadline = None if args.max_minutes is None else started + 60.0 * args.max_minutes
    stopped_early = finetune.out_of_time(deadline, accelerator)
    model.train()
    for epoch in range(starting_epoch, args.num_train_epochs):
        if completed_steps >= args.max_train_steps or stopped_early:
            break
        train_dataloader.set_epoch(epoch)
        skip = resume_batches if epoch == starting_epoch else 0
        active = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        for step, batch in enumerate(active, start=skip):
            with accelerator.accumulate(model):
                _, _, terms = distillation_terms(model, teacher, batch, args, accelerator)
                loss = weighted_loss(terms, args)
                run_sums += torch.cat([loss.detach()[None], terms.detach()]).float()
                run_batches += 1
                finetune.optimizer_step(accelerator, loss, optimizer, lr_scheduler)
            if accelerator.sync_gradients:
                progress_bar.update(1)
                completed_steps += 1
                if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                    save_checkpoint(epoch, step + 1)
                if completed_steps >= args.max_train_steps:
                    break
                if finetune.out_of_time(deadline, accelerator, completed_steps % finetune.BUDGET_SYNC_EVERY == 0):
                    stopped_early = True
                    break
        if stopped_early:
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps:
                save_checkpoint(epoch, step + 1)  # where --resume_from_checkpoint latest goes on
            break
        if completed_steps < args.max_train_steps:
            logger.info(f"epoch {epoch}: {score_held_out(model, teacher, eval_dataloader, args, accelerator)}")
    progress_bar.close()
    stop_reason = None
    if stopped_early:
        stop_reason = f"--max_minutes {args.max_minutes:g} reached at step {completed_steps} of {args.max_train_steps}"
        logger.warning(stop_reason)

    finetune.save_final_model(accelerator, model, tokenizer, args.output_dir)
    # means over this run's batches (a resumed run: since it resumed); none where it trained none
    means = [None] * 4
    if run_batches:
        means = accelerator.reduce(run_sums / run_batches, reduction="mean").tolist()
    results = {
        "teacher": args.teacher,
        **sources,
        "pair_encoding": args.pair_encoding or "cross",
        "train_texts": len(train),
        "held_out_texts": len(held_out),
        **score_held_out(model, teacher, eval_dataloader, args, accelerator),
        "train_steps": completed_steps,
        "planned_steps": args.max_train_steps,
        "epochs": args.num_train_epochs,
        "epochs_trained": round(completed_steps / steps_per_epoch, 3),
        "stopped_early": stopped_early,
        **({"stop_reason": stop_reason} if stopped_early else {}),
        "train_loss": means[0],
        "train_hidden_loss": means[1],
        **({"train_attention_loss": means[2]} if args.kd_attention_weight > 0 else {}),
        **({"train_pooled_loss": means[3]} if args.kd_pooled_weight else {}),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "command": _common.command_line(SCRIPT, argv, accelerator),
    }
    logger.info(f"held out: {({k: v for k, v in results.items() if k.startswith('eval_')})}")
    if accelerator.is_main_process:
        # measured on the saved model: under FSDP the live one is sharded across processes
        saved = zoo.load_pretrained(sj_bert.SpikingBertModel, args.output_dir, "--output_dir",
                                    dtype=torch.float32)
        report = energy_on_dataset(saved.to(accelerator.device), held_out, collate, args.energy_samples)
        results["energy"] = report.to_dict()
        results["energy_samples"] = min(args.energy_samples, len(held_out))
        write_text(os.path.join(args.output_dir, "README.md"), base_card(results, saved.config, report.format()))
        write_json(os.path.join(args.output_dir, "all_results.json"), results)  # last: the folder is complete
    accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main()
