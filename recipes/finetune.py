#!/usr/bin/env python
"""Fine-tune SNN-BERT (or its ANN twin) on a GLUE task with Accelerate.

Modelled on transformers' ``examples/pytorch/text-classification/run_glue_no_trainer.py``: the
same flag names and flow (``main_process_first`` around tokenization, ``accelerator.prepare``,
``gather_for_metrics``, ``save_state`` per step or epoch, ``--resume_from_checkpoint``,
``all_results.json``), plus the spiking settings, a separate learning rate for neuron parameters
and knowledge distillation from a fine-tuned ANN teacher.

    python recipes/finetune.py --task sst2 --data_dir shared/data/glue --output_dir outputs/sst2
    accelerate launch --config_file recipes/configs/single_gpu.yaml recipes/finetune.py --task rte ...

Writes to ``--output_dir``: the model (``save_pretrained``) and tokenizer, ``all_results.json``,
a model card ``README.md`` and, with ``--checkpointing_steps``, ``step_N``/``epoch_N`` folders.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import sys

import datasets
import torch
import torch.nn.functional as F
import transformers
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, SchedulerType, get_scheduler

import sj_bert
from sj_bert import glue
from sj_bert import recipes_util as ru

logger = get_logger(__name__)

SCRIPT = "recipes/finetune.py"
STATE_FILE = "training_state.json"
_CHECKPOINT_NAME = re.compile(r"^(step|epoch)_\d+$")
# Spiking settings passed to SpikingBertForSequenceClassification.from_pretrained when given.
SNN_FLAGS = (
    "coding", "neuron", "time_steps", "tau", "v_threshold", "surrogate", "attention", "per_channel",
    "learnable_threshold", "pooling",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Fine-tune SNN-BERT or BERT on a GLUE task with Accelerate")
    ru.add_data_args(parser, task_required=True)
    parser.add_argument(
        "--model_name_or_path", default=None,
        help="BERT or SNN-BERT checkpoint (folder or hub id); default: the offline MiniLM-L6-H384",
    )
    parser.add_argument("--max_train_samples", type=int, default=None, help="train on the first N samples only")
    parser.add_argument("--per_device_train_batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--num_train_epochs", type=int, default=3)
    parser.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument(
        "--lr_scheduler_type", type=SchedulerType, default="linear",
        choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
    )
    parser.add_argument("--num_warmup_steps", type=int, default=0)
    parser.add_argument("--output_dir", default=None, help="where the model, results, card and checkpoints go")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--checkpointing_steps", default=None, help='save the state every N steps, or "epoch"')
    parser.add_argument(
        "--resume_from_checkpoint", default=None, help='a step_N/epoch_N folder, or "latest" in --output_dir'
    )
    parser.add_argument("--cpu", action="store_true", help="run on CPU even where a GPU is available")
    parser.add_argument("--with_tracking", action="store_true", help="log metrics through Accelerate's trackers")
    parser.add_argument("--report_to", default="tensorboard", help='tracker(s): "tensorboard", "wandb", ..., or "all"')
    # SNN-BERT
    parser.add_argument(
        "--coding", choices=["individual", "repeat", "ann"], default=None,
        help="spike coding; ann: plain BertForSequenceClassification (the teacher). Default: the "
        "checkpoint's own for an SNN-BERT checkpoint, else individual",
    )
    parser.add_argument("--neuron", default=None, help="spiking neuron: bpsn or lif")
    parser.add_argument("--time_steps", type=int, default=None, help="steps per token (repeat coding)")
    parser.add_argument("--tau", type=float, default=None)
    parser.add_argument("--v_threshold", type=float, default=None)
    parser.add_argument("--surrogate", default=None, help="SpikingJelly surrogate class, e.g. ATan or Sigmoid")
    parser.add_argument("--attention", choices=["softmax", "spiking"], default=None)
    parser.add_argument("--per_channel", action=argparse.BooleanOptionalAction, default=None,
                        help="one decay/threshold per channel")
    parser.add_argument("--learnable_threshold", action=argparse.BooleanOptionalAction, default=None,
                        help="make the BPSN threshold a parameter")
    parser.add_argument("--pooling", choices=["cls", "mean"], default=None,
                        help="what the pooler reads: the first token (BERT) or the mean of real tokens")
    parser.add_argument("--neuron_lr", type=float, default=None,
                        help="learning rate of the neurons' parameters (default: 1e-2 for an individual-coding SNN-BERT built from BERT, else --learning_rate)")
    parser.add_argument("--energy_samples", type=int, default=32,
                        help="dev sentences the final energy report (SNN models) is measured on")
    # Knowledge distillation
    parser.add_argument("--teacher", default=None, help="fine-tuned ANN checkpoint to distil from")
    parser.add_argument("--kd_alpha", type=float, default=0.5, help="weight of the teacher term (1 - alpha: hard loss)")
    parser.add_argument("--kd_temperature", type=float, default=2.0, help="softmax temperature T of the soft targets")
    args = parser.parse_args(argv)

    args.task_name = glue.check_task(args.task_name)
    if args.checkpointing_steps is not None and args.checkpointing_steps != "epoch":
        if not args.checkpointing_steps.isdigit() or int(args.checkpointing_steps) < 1:
            parser.error(
                f'--checkpointing_steps must be a positive integer or "epoch", got {args.checkpointing_steps!r}'
            )
        args.checkpointing_steps = int(args.checkpointing_steps)
    if args.coding == "ann":
        given = [f"--{name}" for name in SNN_FLAGS[1:] if getattr(args, name) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply to spiking models, not --coding ann")
    if not 0.0 <= args.kd_alpha <= 1.0:
        parser.error(f"--kd_alpha must be in [0, 1], got {args.kd_alpha}")
    if args.output_dir is None:
        needs = {"--checkpointing_steps": args.checkpointing_steps, "--with_tracking": args.with_tracking,
                 "--resume_from_checkpoint latest": args.resume_from_checkpoint == "latest"}
        for flag in (flag for flag, given in needs.items() if given):
            parser.error(f"{flag} needs --output_dir")
    return args


# The recipe's default for SNN-BERT with individual coding built from a BERT checkpoint: the
# best settings of docs/accuracy.md (flags given on the command line win; an SNN-BERT
# checkpoint keeps its own settings).
INDIVIDUAL_DEFAULTS = {"per_channel": True, "v_threshold": 0.25, "pooling": "mean", "spike_amplitude": "threshold"}
INDIVIDUAL_NEURON_LR = 1e-2


def apply_recipe_defaults(args, path: str) -> dict:
    """Spiking settings for ``from_pretrained``: the given flags, plus :data:`INDIVIDUAL_DEFAULTS`
    (and ``--neuron_lr`` :data:`INDIVIDUAL_NEURON_LR`) when an ANN BERT becomes an
    individual-coding SNN-BERT."""
    snn = {name: getattr(args, name) for name in SNN_FLAGS if getattr(args, name) is not None}
    from_bert = transformers.AutoConfig.from_pretrained(path).model_type != "spiking_bert"
    if from_bert and snn.get("coding", "individual") == "individual":
        snn = {**INDIVIDUAL_DEFAULTS, **snn}
        if args.neuron_lr is None:
            args.neuron_lr = INDIVIDUAL_NEURON_LR
    return snn


def distillation_loss(student_logits, teacher_logits, temperature: float, regression: bool):
    """Soft-target loss: ``T^2 KL(softmax(t/T) || softmax(s/T))`` per sample; MSE to the teacher for regression."""
    if regression:
        return F.mse_loss(student_logits.squeeze(-1), teacher_logits.squeeze(-1).to(student_logits.dtype))
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.to(student_logits.dtype) / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def load_model(args, num_labels: int):
    """The student: plain BERT for ``--coding ann``, else SNN-BERT (from a BERT or SNN-BERT checkpoint)."""
    path = ru.resolve_checkpoint(args.model_name_or_path, "--model_name_or_path")
    names = glue.TASK_LABELS[args.task_name]
    # float32 master weights whatever the checkpoint stores (mixed precision is accelerate's job)
    labels = {"num_labels": num_labels, "dtype": torch.float32}
    if names is not None:
        labels["id2label"] = dict(enumerate(names))
        labels["label2id"] = {name: i for i, name in enumerate(names)}
    if args.coding == "ann":
        model = ru.from_pretrained(transformers.BertForSequenceClassification, path, "--model_name_or_path", **labels)
    else:
        snn = apply_recipe_defaults(args, path)
        model = ru.from_pretrained(
            sj_bert.SpikingBertForSequenceClassification, path, "--model_name_or_path", **snn, **labels
        )
    # set on the config, not passed to from_pretrained: transformers 5 configs have no such
    # field and would hand the unknown keyword to the model's __init__
    model.config.finetuning_task = args.task_name
    tokenizer = ru.from_pretrained(AutoTokenizer, path, "--model_name_or_path")
    return tokenizer, model


def load_teacher(args, num_labels: int, device):
    _, teacher = ru.load_checkpoint(args.teacher, "--teacher")
    if teacher.config.num_labels != num_labels:
        raise ValueError(
            f"--teacher {args.teacher} has {teacher.config.num_labels} labels, task {args.task_name} needs {num_labels}"
        )
    teacher.requires_grad_(False)
    return teacher.eval().to(device)


def parameter_groups(model, args):
    """AdamW groups: decayed weights, undecayed biases/LayerNorm, and the neurons' own parameters."""
    from spikingjelly.activation_based.neuron import BaseNode

    neuron_params = {id(p) for m in model.modules() if isinstance(m, BaseNode) for p in m.parameters()}
    if args.neuron_lr is not None and not neuron_params:
        logger.warning("--neuron_lr: the model has no spiking-neuron parameters; ignored")
    no_decay = ("bias", "LayerNorm.weight")
    groups = {"decay": [], "no_decay": [], "neuron": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in neuron_params:
            groups["neuron"].append(param)
        elif any(nd in name for nd in no_decay):
            groups["no_decay"].append(param)
        else:
            groups["decay"].append(param)
    out = [
        {"params": groups["decay"], "weight_decay": args.weight_decay},
        {"params": groups["no_decay"], "weight_decay": 0.0},
    ]
    if groups["neuron"]:
        lr = args.learning_rate if args.neuron_lr is None else args.neuron_lr
        out.append({"params": groups["neuron"], "weight_decay": 0.0, "lr": lr})
    return out


def find_latest_checkpoint(output_dir: str) -> str:
    """The complete ``step_N``/``epoch_N`` folder of ``output_dir`` with the most optimizer steps."""
    found = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            path = os.path.join(output_dir, name)
            if _CHECKPOINT_NAME.match(name) and os.path.isfile(os.path.join(path, STATE_FILE)):
                steps = ru.read_json(os.path.join(path, STATE_FILE))["completed_steps"]
                found.append((steps, os.path.getmtime(path), path))
    if not found:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no step_N or epoch_N checkpoint in {output_dir}")
    return max(found)[2]


def main(argv=None):
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    accelerator_kwargs = {}
    if args.with_tracking:
        accelerator_kwargs = {"log_with": args.report_to, "project_dir": args.output_dir}
    accelerator = ru.make_accelerator(
        args.cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        # The shuffle of epoch e is seeded by (seed + e), so a resumed run sees the same batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        **accelerator_kwargs,
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()

    if args.seed is not None:
        set_seed(args.seed)
    if args.output_dir is not None and accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()

    task = args.task_name
    regression = glue.is_regression(task)
    with accelerator.main_process_first():
        raw = glue.load_glue(task, args.data_dir)
    raw["train"] = ru.first_rows(raw["train"], args.max_train_samples)
    eval_splits = glue.eval_splits(task)
    for split in eval_splits:
        raw[split] = ru.first_rows(raw[split], args.max_eval_samples)

    args.model_name_or_path = args.model_name_or_path or sj_bert.offline_bert()
    tokenizer, model = load_model(args, glue.num_labels(task))
    teacher = load_teacher(args, glue.num_labels(task), accelerator.device) if args.teacher else None

    with accelerator.main_process_first():
        processed = ru.tokenize(raw, task, tokenizer, args.max_length, args.pad_to_max_length)
    collate = ru.make_collator(tokenizer, args.pad_to_max_length, accelerator.mixed_precision)
    train_dataloader = DataLoader(
        processed["train"], shuffle=True, collate_fn=collate, batch_size=args.per_device_train_batch_size,
        generator=torch.Generator(),
    )
    eval_dataloaders = ru.eval_dataloaders(processed, eval_splits, collate, args.per_device_eval_batch_size)

    optimizer = torch.optim.AdamW(parameter_groups(model, args), lr=args.learning_rate)
    model, optimizer, train_dataloader, *prepared = accelerator.prepare(
        model, optimizer, train_dataloader, *eval_dataloaders.values()
    )
    eval_dataloaders = dict(zip(eval_dataloaders, prepared))

    # After prepare: the train dataloader is sharded, so its length is per process.
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    else:
        args.num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    # Stepped by hand once per optimizer update (an accelerate-prepared scheduler steps once per
    # process), and saved with the state.
    lr_scheduler = get_scheduler(
        name=args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps,
        num_training_steps=args.max_train_steps,
    )
    accelerator.register_for_checkpointing(lr_scheduler)

    if args.with_tracking:
        config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}
        accelerator.init_trackers("sj_bert_glue", config)

    total_batch_size = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    model_class = type(accelerator.unwrap_model(model)).__name__
    logger.info(f"  Task = {task}, model = {args.model_name_or_path} ({model_class})")
    logger.info(f"  Num examples = {len(processed['train'])}, num epochs = {args.num_train_epochs}")
    logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Total optimization steps = {args.max_train_steps}")

    def save_checkpoint(name: str, epoch: int, batches_seen: int) -> None:
        # Written under .tmp-<name>, renamed when complete: step_N/epoch_N are never half-written.
        if batches_seen >= len(train_dataloader):
            epoch, batches_seen = epoch + 1, 0
        final = os.path.join(args.output_dir, name)
        tmp = os.path.join(args.output_dir, f".tmp-{name}")
        if accelerator.is_main_process and os.path.exists(tmp):
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(tmp)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"completed_steps": completed_steps, "epoch": epoch, "batches_in_epoch": batches_seen}
            ru.write_json(os.path.join(tmp, STATE_FILE), state)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
        accelerator.wait_for_everyone()

    completed_steps, starting_epoch, resume_batches = 0, 0, 0
    if args.resume_from_checkpoint:
        checkpoint = args.resume_from_checkpoint
        if checkpoint == "latest":
            checkpoint = find_latest_checkpoint(args.output_dir)
        elif not os.path.isdir(checkpoint):
            raise FileNotFoundError(f"--resume_from_checkpoint: checkpoint folder not found: {checkpoint}")
        if not os.path.isfile(os.path.join(checkpoint, STATE_FILE)):
            raise ValueError(
                f"--resume_from_checkpoint: {checkpoint} has no {STATE_FILE}; not a finetune.py checkpoint"
            )
        accelerator.print(f"Resumed from checkpoint: {checkpoint}")
        accelerator.load_state(checkpoint)
        state = ru.read_json(os.path.join(checkpoint, STATE_FILE))
        completed_steps, starting_epoch, resume_batches = (
            state["completed_steps"], state["epoch"], state["batches_in_epoch"]
        )

    progress_bar = tqdm(range(args.max_train_steps), disable=not accelerator.is_local_main_process)
    progress_bar.update(completed_steps)
    # Sums over this run's batches of the loss optimized, the hard (label) loss and the teacher term.
    run_sums = torch.zeros(3, device=accelerator.device)
    run_batches = 0
    results = None
    for epoch in range(starting_epoch, args.num_train_epochs):
        if completed_steps >= args.max_train_steps:
            break
        model.train()
        train_dataloader.set_epoch(epoch)
        skip = resume_batches if epoch == starting_epoch else 0
        active = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        epoch_sums, epoch_batches = torch.zeros_like(run_sums), 0
        for step, batch in enumerate(active, start=skip):
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs.loss
                kd_loss = torch.zeros_like(loss)
                if teacher is not None:
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    with torch.no_grad(), accelerator.autocast():
                        teacher_logits = teacher(**inputs).logits
                    kd_loss = distillation_loss(outputs.logits, teacher_logits, args.kd_temperature, regression)
                    loss = (1.0 - args.kd_alpha) * outputs.loss + args.kd_alpha * kd_loss
                epoch_sums += torch.stack([loss, outputs.loss, kd_loss]).detach().float()
                epoch_batches += 1
                accelerator.backward(loss)
                optimizer.step()
                if accelerator.sync_gradients and not optimizer.step_was_skipped:
                    lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                progress_bar.update(1)
                completed_steps += 1
                if isinstance(args.checkpointing_steps, int) and completed_steps % args.checkpointing_steps == 0:
                    save_checkpoint(f"step_{completed_steps}", epoch, step + 1)
                if completed_steps >= args.max_train_steps:
                    break

        run_sums += epoch_sums
        run_batches += epoch_batches
        results = ru.evaluate(model, eval_dataloaders, accelerator, task)
        logger.info(f"epoch {epoch}: {results}")
        if args.with_tracking:
            means = (epoch_sums / max(epoch_batches, 1)).tolist()
            log = {**results, "train_loss": means[0], "epoch": epoch, "step": completed_steps}
            if teacher is not None:
                log.update(train_hard_loss=means[1], train_kd_loss=means[2])
            accelerator.log(log, step=completed_steps)
        if args.checkpointing_steps == "epoch":
            save_checkpoint(f"epoch_{epoch}", epoch, step + 1)

    if results is None:  # resumed from the last checkpoint: nothing left to train
        results = ru.evaluate(model, eval_dataloaders, accelerator, task)
    if args.with_tracking:
        accelerator.end_training()

    loss_means = accelerator.reduce(run_sums / max(run_batches, 1), reduction="mean").tolist()
    results = {
        "task": task,
        **results,
        "train_samples": len(processed["train"]),
        "train_steps": completed_steps,
        "epochs": args.num_train_epochs,
        "train_loss": loss_means[0],
        **({"train_hard_loss": loss_means[1], "train_kd_loss": loss_means[2]} if teacher is not None else {}),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "command": ru.command_line(SCRIPT, argv, accelerator),
    }

    if args.output_dir is not None:
        accelerator.wait_for_everyone()
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(
            args.output_dir,
            is_main_process=accelerator.is_main_process,
            save_function=accelerator.save,
            state_dict=accelerator.get_state_dict(model),
        )
        if accelerator.is_main_process:
            tokenizer.save_pretrained(args.output_dir)
            energy_text = None
            if ru.is_spiking(unwrapped):
                # Measured on the saved model: under FSDP the live one is sharded across processes.
                _, saved = ru.load_checkpoint(args.output_dir)
                split = processed[eval_splits[0]]
                report = ru.energy_on_dataset(saved.to(accelerator.device), split, collate, args.energy_samples)
                results["energy"] = report.to_dict()
                results["energy_samples"] = min(args.energy_samples, len(split))
                energy_text = report.format()
            ru.write_json(os.path.join(args.output_dir, "all_results.json"), results)
            base = f"`{args.model_name_or_path}`"
            if args.model_name_or_path == sj_bert.offline_bert():
                base = "MiniLM-L6-H384 (`sentence-transformers/all-MiniLM-L6-v2`, offline copy)"
            card = ru.model_card(results, unwrapped.config, base, energy_text)
            ru.write_text(os.path.join(args.output_dir, "README.md"), card)
        accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main()
