#!/usr/bin/env python
"""Fine-tune SNN-BERT (or its ANN twin) on a GLUE task with Accelerate.

Modelled on transformers' ``examples/pytorch/text-classification/run_glue_no_trainer.py``: the
same flag names and flow (``main_process_first`` around tokenization, ``accelerator.prepare``,
``gather_for_metrics``, ``save_state`` per step or epoch, ``--resume_from_checkpoint``,
``all_results.json``), plus the spiking settings, a separate learning rate for neuron parameters,
knowledge distillation from a fine-tuned ANN teacher (its logits; with
``--kd_hidden_weight`` every encoder layer's output, with ``--kd_attention_weight`` every
layer's attention map: ``_distill.py``) and a firing-rate penalty (``--spike_rate_weight``:
``sj_bert.spike_rate``).

    python recipes/finetune.py --task sst2 --data_dir shared/data/glue --output_dir outputs/sst2
    accelerate launch --config_file recipes/configs/single_gpu.yaml recipes/finetune.py --task rte ...

Writes to ``--output_dir``: ``run_manifest.json`` (at the start: the settings that define the
run), the model (``save_pretrained``) and tokenizer, a model card ``README.md``, then
``all_results.json`` (last: a folder with results holds the model they describe) and, with
``--checkpointing_steps``, ``step_N``/``epoch_N`` folders (each with its copy of the manifest).
A folder or checkpoint of another run (other seed, learning rate, batch size, data, model, ...)
is refused unless ``--overwrite_output_dir``; a run may be resumed and run longer.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

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
import sj_bert
from sj_bert import conversion, glue, zoo
from sj_bert.energy import energy_on_dataset
from sj_bert.files import move_into, read_json, write_json, write_text
from sj_bert.modeling.configuration_spiking_bert import (
    AMPLITUDES, ATTENTIONS, CODINGS, DIRECTIONS, NEURON_SITES, NEURONS, POOLINGS, SPIKING_FIELDS, is_spiking,
)
from sj_bert.modeling.modeling_bi_encoder import pair_encoding, real_token_mask
from sj_bert.ops.bpsn.dispatch import BACKENDS
from sj_bert.spike_rate import SpikeRate

logger = get_logger(__name__)

SCRIPT = "recipes/finetune.py"
STATE_FILE = "training_state.json"
RUN_FILE = "run_manifest.json"
_CHECKPOINT_NAME = re.compile(r"^(step|epoch)_\d+$")
# Spiking settings passed to SpikingBertForSequenceClassification.from_pretrained when given:
# every field of the config's, so a setting the model gains is a flag here too ("coding" first)
SNN_FLAGS = SPIKING_FIELDS
# The clock --max_minutes is measured on: a module attribute, so the tests can move it forward.
wall_clock = time.monotonic
# Under several processes the budget is checked together (a collective) every this many optimizer
# steps, so that all stop at the same step; a single process checks after every step, for free.
BUDGET_SYNC_EVERY = 20


class _AllOrSites(argparse.Action):
    """``--ternary_spikes`` alone: ``True`` (every neuron); with sites: their list."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(values) if values else True)


class _SiteDict(argparse.Action):
    """``--site_thresholds a=0.5 b=0.3``: ``{"a": 0.5, "b": 0.3}``."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict(values))


def site_threshold(text: str) -> tuple[str, float]:
    """An argparse ``type``: ``"SITE=THRESHOLD"`` -> ``(site, threshold)``."""
    site, _, value = text.partition("=")
    if site not in NEURON_SITES:
        raise argparse.ArgumentTypeError(f"expected SITE=THRESHOLD with SITE one of {', '.join(NEURON_SITES)}, "
                                         f"got {text!r}")
    try:
        return site, _common.positive_float(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected SITE=THRESHOLD with a positive finite THRESHOLD, got {text!r}")


def add_spiking_args(parser, *, ann: bool) -> None:
    """The SNN-BERT flags (coding, neuron settings, the neurons' learning rate, frozen embeddings),
    shared with ``distill_base.py``; ``ann`` offers ``--coding ann`` (BERT itself) too."""
    parser.add_argument(
        "--coding", choices=(*CODINGS, "ann") if ann else CODINGS, default=None,
        help="spike coding" + ("; ann: plain BertForSequenceClassification (the teacher)" if ann else "")
        + ". Default: the checkpoint's own for an SNN-BERT checkpoint, else individual",
    )
    parser.add_argument("--neuron", choices=NEURONS, default=None, help="spiking neuron (default: the coding's own)")
    parser.add_argument("--time_steps", type=_common.positive_int, default=None, help="steps per token (repeat coding)")
    parser.add_argument("--tau", type=float, default=None)
    parser.add_argument("--v_threshold", type=float, default=None)
    parser.add_argument("--surrogate", default=None, help="SpikingJelly surrogate class, e.g. ATan or Sigmoid")
    parser.add_argument("--surrogate_alpha", type=_common.positive_float, default=None,
                        help="the surrogate's alpha (default: the class's own)")
    parser.add_argument("--direction", choices=DIRECTIONS, default=None, help="BPSN integration direction")
    parser.add_argument("--attention", choices=ATTENTIONS, default=None)
    parser.add_argument("--per_channel", action=argparse.BooleanOptionalAction, default=None,
                        help="one decay/threshold per channel")
    parser.add_argument("--learnable_threshold", action=argparse.BooleanOptionalAction, default=None,
                        help="make the BPSN threshold a parameter")
    parser.add_argument("--pooling", choices=POOLINGS, default=None,
                        help="what the pooler reads: the first token (BERT) or the mean of real tokens")
    parser.add_argument("--spike_amplitude", choices=AMPLITUDES, default=None,
                        help="threshold: a spike carries its channel's threshold; unit: 0/1 spikes")
    parser.add_argument("--ternary_spikes", nargs="*", choices=NEURON_SITES, action=_AllOrSites, default=None,
                        metavar="SITE",
                        help="BPSN fires -1 below -threshold too (spikes in {-1, 0, 1}): alone, every neuron; with "
                             "SITEs, the neurons there only (attention.self.neuron intermediate.neuron: the two "
                             f"that read the residual stream). Sites: {', '.join(NEURON_SITES)}")
    parser.add_argument("--no-ternary_spikes", dest="ternary_spikes", action="store_const", const=False,
                        default=None, help="binary spikes everywhere")
    parser.add_argument("--site_thresholds", nargs="+", type=site_threshold, action=_SiteDict, default=None,
                        metavar="SITE=THRESHOLD",
                        help="the neurons at these sites start from their own threshold instead of --v_threshold, "
                             "e.g. attention.self.neuron=0.5 intermediate.neuron=0.5")
    parser.add_argument("--attention_score_scale", type=_common.positive_float, default=None,
                        help="a learnable per-head factor on the softmax scores, starting here (spike-fed Q/K "
                             "give near-uniform attention; bench/attention_focus.py); trained at --neuron_lr")
    parser.add_argument("--neuron_backend", choices=BACKENDS, default=None,
                        help="BPSN implementation (default: by device)")
    parser.add_argument("--neuron_lr", type=_common.positive_float, default=None,
                        help="learning rate of the neurons' parameters (default: 1e-2 for an individual-coding SNN-BERT built from BERT, else --learning_rate)")
    parser.add_argument("--freeze_embeddings", action="store_true",
                        help="keep BERT's embeddings (word, position, token type, their LayerNorm) as loaded: "
                             "a regulariser, and what lets a task checkpoint share them with its base model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Fine-tune SNN-BERT or BERT on a GLUE task with Accelerate")
    _common.add_data_args(parser, task_required=True)
    parser.add_argument(
        "--model_name_or_path", default=None,
        help="BERT or SNN-BERT checkpoint (zoo name, folder or hub id); default: the offline MiniLM-L6-H384",
    )
    parser.add_argument("--max_train_samples", type=_common.positive_int, default=None,
                        help="train on the first N samples only")
    parser.add_argument("--pair_encoding", choices=glue.PAIR_ENCODINGS, default=None,
                        help="pair tasks only. cross (default): both sentences in one input, compared token by token "
                             "inside attention (BertForSequenceClassification); bi: each sentence encoded alone and "
                             "mean-pooled, then compared (Sentence-BERT: a classifier on [u, v, |u-v|, u*v], or for "
                             "STS-B 5 cos(u, v) trained by MSE), sj_bert.BertBiEncoder / SpikingBertBiEncoder")
    parser.add_argument("--per_device_train_batch_size", type=_common.positive_int, default=8)
    parser.add_argument("--learning_rate", type=_common.positive_float, default=5e-5)
    parser.add_argument("--weight_decay", type=_common.non_negative_float, default=0.0)
    parser.add_argument("--num_train_epochs", type=_common.positive_int, default=3)
    parser.add_argument("--max_train_steps", type=_common.positive_int, default=None, help="overrides --num_train_epochs")
    parser.add_argument("--gradient_accumulation_steps", type=_common.positive_int, default=1)
    parser.add_argument(
        "--max_minutes", type=_common.non_negative_float, default=None,
        help="wall-clock budget, counted from the script's start: when spent, training stops after the current "
        "optimizer step (with --checkpointing_steps a step_N checkpoint is saved to resume from), then the model is "
        "saved and scored as usual and all_results.json says where it stopped (stopped_early, stop_reason)",
    )
    parser.add_argument(
        "--lr_scheduler_type", type=SchedulerType, default="linear",
        choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
    )
    parser.add_argument("--num_warmup_steps", type=_common.non_negative_int, default=0)
    parser.add_argument("--output_dir", default=None, help="where the model, results, card and checkpoints go")
    parser.add_argument(
        "--overwrite_output_dir", action="store_true",
        help="replace another run in --output_dir (its checkpoints, model, results and card are removed)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--checkpointing_steps", default=None, help='save the state every N steps, or "epoch"')
    parser.add_argument(
        "--resume_from_checkpoint", default=None, help='a step_N/epoch_N folder, or "latest" in --output_dir'
    )
    parser.add_argument("--cpu", action="store_true", help="run on CPU even where a GPU is available")
    parser.add_argument("--with_tracking", action="store_true", help="log metrics through Accelerate's trackers")
    parser.add_argument("--report_to", default="tensorboard", help='tracker(s): "tensorboard", "wandb", ..., or "all"')
    add_spiking_args(parser, ann=True)
    parser.add_argument("--head_lr", type=_common.positive_float, default=None,
                        help="learning rate of the task head, classifier.* (new for each task unless the start has "
                             "one; default: 1e-3 for a bi-encoder's classifier on [u, v, |u-v|, u*v], else "
                             "--learning_rate)")
    parser.add_argument("--calibrate_conversion", type=_common.positive_int, default=None, metavar="N",
                        help="as an ANN BERT becomes SNN-BERT (individual coding, softmax attention), fit each "
                             "neuron's per-channel map from its spikes to what the ANN's matrices read there, on the "
                             "first N train examples, and fold it into those matrices (sj_bert.conversion); "
                             "+1.4 points on SST-2 over three runs at 250 CPU steps (docs/accuracy.md)")
    parser.add_argument("--calibrate_thresholds", type=_common.fraction, default=None, metavar="RATE",
                        help="as an ANN BERT becomes SNN-BERT (individual coding, softmax attention, per-channel "
                             "thresholds), set each neuron's per-channel threshold so that the channel fires on about "
                             "RATE of the real tokens of the first N train examples (N: --calibrate_conversion, else "
                             f"{THRESHOLD_EXAMPLES}), before --calibrate_conversion's maps (sj_bert.conversion)")
    parser.add_argument("--spike_rate_weight", type=_common.non_negative_float, default=0.0,
                        help="add this weight times the firing rate (spikes over neuron updates at real tokens, "
                             "differentiable through the surrogate: sj_bert.spike_rate) to the loss: fewer spikes, "
                             "less energy per sample; SNN-BERT only")
    parser.add_argument("--energy_samples", type=_common.positive_int, default=32,
                        help="dev sentences the final energy report (SNN models) is measured on")
    # Knowledge distillation
    parser.add_argument("--teacher", default=None, help="fine-tuned ANN checkpoint to distil from (zoo name, folder or hub id)")
    parser.add_argument("--kd_alpha", type=float, default=0.5, help="weight of the teacher term (1 - alpha: hard loss)")
    parser.add_argument("--kd_temperature", type=_common.positive_float, default=2.0,
                        help="softmax temperature T of the soft targets")
    parser.add_argument("--kd_hidden_weight", type=float, default=0.0,
                        help="weight of the layer-by-layer hidden-state term: the MSE between the student's and "
                             "the teacher's encoder layer outputs at real tokens (as TinyBERT, SpikingBERT and "
                             "SpikeBERT distil); needs --teacher of the student's depth and width")
    parser.add_argument("--kd_attention_weight", type=float, default=0.0,
                        help="weight of the layer-by-layer attention term: KL(teacher || student) of every "
                             "layer's softmax attention map at real query tokens (as MiniLM distils); needs "
                             "--teacher of the student's depth and head count, and softmax attention")
    args = parser.parse_args(argv)

    args.task_name = glue.check_task(args.task_name)
    if args.pair_encoding == "bi" and not glue.is_pair_task(args.task_name):
        parser.error(f"--pair_encoding bi encodes the two sentences of a pair apart; {args.task_name} has one "
                     f"sentence per example (pair tasks: {', '.join(glue.PAIR_TASKS)})")
    if args.pair_encoding == "cross":
        args.pair_encoding = None  # the default, recorded as unset: runs from before the flag resume either way
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
    if args.spike_rate_weight > 0 and args.coding == "ann":
        parser.error("--spike_rate_weight penalizes spikes: it applies to spiking models, not --coding ann")
    for flag in CALIBRATION_FLAGS:
        if getattr(args, flag) is not None and (args.coding not in (None, "individual") or args.attention == "spiking"):
            parser.error(f"--{flag} calibrates an individual-coding SNN-BERT with softmax attention, "
                         f"not --coding {args.coding}" + (" --attention spiking" if args.attention == "spiking" else ""))
    if args.calibrate_thresholds is not None and args.per_channel is False:
        parser.error("--calibrate_thresholds sets a threshold per channel; drop --no-per_channel")
    if not 0.0 <= args.kd_alpha <= 1.0:
        parser.error(f"--kd_alpha must be in [0, 1], got {args.kd_alpha}")
    for flag, what in (("kd_hidden_weight", "hidden states"), ("kd_attention_weight", "attention maps")):
        weight = getattr(args, flag)
        if not weight >= 0:  # NaN too
            parser.error(f"--{flag} must be a number >= 0, got {weight}")
        if weight > 0 and args.teacher is None:
            parser.error(f"--{flag} needs --teacher (the {what} are the teacher's)")
    if args.output_dir is None:
        needs = {"--checkpointing_steps": args.checkpointing_steps, "--with_tracking": args.with_tracking,
                 "--resume_from_checkpoint latest": args.resume_from_checkpoint == "latest"}
        for flag in (flag for flag, given in needs.items() if given):
            parser.error(f"{flag} needs --output_dir")
    if args.overwrite_output_dir and args.resume_from_checkpoint == "latest":
        parser.error("--overwrite_output_dir removes the checkpoints that --resume_from_checkpoint latest would resume")
    return args


# The recipe's default for SNN-BERT with individual coding built from a BERT checkpoint: the
# best settings of docs/accuracy.md (flags given on the command line win; an SNN-BERT
# checkpoint keeps its own settings).
INDIVIDUAL_DEFAULTS = {"per_channel": True, "v_threshold": 0.25, "pooling": "mean", "spike_amplitude": "threshold"}
INDIVIDUAL_NEURON_LR = 1e-2
# --head_lr of a bi-encoder with a classifier (MRPC, RTE, ...; not STS-B's cosine), ANN or SNN:
# its head on [u, v, |u-v|, u*v] starts from nothing and, at the encoder's rate, left MRPC at
# the majority class in 3 CPU epochs (docs/accuracy.md, "The bi-encoder's head").
BI_ENCODER_HEAD_LR = 1e-3
#: the train examples ``--calibrate_thresholds`` measures without ``--calibrate_conversion N``
THRESHOLD_EXAMPLES = 512
#: the flags that calibrate an ANN BERT as it becomes SNN-BERT (checked together; finetune.py's only)
CALIBRATION_FLAGS = ("calibrate_conversion", "calibrate_thresholds")


def apply_recipe_defaults(args, path: str) -> dict:
    """Spiking settings for ``from_pretrained``: the given flags, plus :data:`INDIVIDUAL_DEFAULTS`
    (and ``--neuron_lr`` :data:`INDIVIDUAL_NEURON_LR`) when an ANN BERT becomes an
    individual-coding SNN-BERT. ``--calibrate_conversion`` needs such a start: an SNN-BERT
    checkpoint's matrices already read spikes."""
    snn = {name: getattr(args, name) for name in SNN_FLAGS if getattr(args, name) is not None}
    from_bert = not is_spiking(transformers.AutoConfig.from_pretrained(path))
    for flag in CALIBRATION_FLAGS:
        if getattr(args, flag) and not from_bert:
            raise ValueError(
                f"--{flag} calibrates an ANN BERT as it becomes SNN-BERT; {args.model_name_or_path} is "
                "already SNN-BERT (its matrices read spikes): start from the ANN checkpoint, or drop the flag")
    if from_bert and snn.get("coding", "individual") == "individual":
        snn = {**INDIVIDUAL_DEFAULTS, **snn}
        if args.neuron_lr is None:
            args.neuron_lr = INDIVIDUAL_NEURON_LR
    return snn


def load_model(args, num_labels: int):
    """The student: plain BERT for ``--coding ann``, else SNN-BERT (from a BERT or SNN-BERT
    checkpoint); with ``--pair_encoding bi`` their bi-encoders (from an encoder, a cross-encoder or
    a bi-encoder checkpoint: the encoder's weights are kept, a head of another shape starts anew;
    ``--head_lr`` defaults to :data:`BI_ENCODER_HEAD_LR` where it has a classifier)."""
    path = zoo.resolve_checkpoint(args.model_name_or_path, "--model_name_or_path")
    bi = args.pair_encoding == "bi"
    start_bi = pair_encoding(zoo.load_pretrained(transformers.AutoConfig, path, "--model_name_or_path")) == "bi"
    if start_bi and not bi:
        raise ValueError(f"--model_name_or_path {args.model_name_or_path} is a bi-encoder (each sentence encoded "
                         "alone); continue it with --pair_encoding bi")
    names = glue.TASK_LABELS[args.task_name]
    # float32 master weights whatever the checkpoint stores (mixed precision is accelerate's job)
    labels = {"num_labels": num_labels, "dtype": torch.float32}
    if names is not None:
        labels["id2label"] = dict(enumerate(names))
        labels["label2id"] = {name: i for i, name in enumerate(names)}
    if bi and not start_bi:
        labels["ignore_mismatched_sizes"] = True  # a cross-encoder's classifier reads [D], the pair head [4 D]
    if args.coding == "ann":
        ann_class = sj_bert.BertBiEncoder if bi else transformers.BertForSequenceClassification
        model = zoo.load_pretrained(ann_class, path, "--model_name_or_path", **labels, **map_attention(args))
    else:
        snn = apply_recipe_defaults(args, path)
        snn_class = sj_bert.SpikingBertBiEncoder if bi else sj_bert.SpikingBertForSequenceClassification
        model = zoo.load_pretrained(snn_class, path, "--model_name_or_path", **snn, **labels)
    # set on the config, not passed to from_pretrained: transformers 5 configs have no such
    # field and would hand the unknown keyword to the model's __init__
    model.config.finetuning_task = args.task_name
    if bi and args.head_lr is None and model.classifier is not None:
        args.head_lr = BI_ENCODER_HEAD_LR
    tokenizer = zoo.load_pretrained(AutoTokenizer, path, "--model_name_or_path")
    return tokenizer, model


def calibrate_conversion(model, train, collate, args, device, resumed: bool) -> None:
    """``--calibrate_thresholds RATE`` (:func:`sj_bert.conversion.calibrate_thresholds`), then
    ``--calibrate_conversion N`` (:func:`sj_bert.conversion.calibrate_spike_maps`), on the first
    ``N`` train examples (:data:`THRESHOLD_EXAMPLES` without ``--calibrate_conversion``), in
    batches of ``--per_device_eval_batch_size``, before training (the start was checked to be an
    ANN BERT by :func:`apply_recipe_defaults`). It draws nothing from the global random stream,
    so the training after it is the one a run from the saved calibrated model would train. A
    resumed run skips it: its weights come from the checkpoint."""
    if resumed:
        logger.info("--calibrate_*: skipped, the resumed weights come from the checkpoint")
        return
    first = train.select(range(min(args.calibrate_conversion or THRESHOLD_EXAMPLES, len(train))))
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    # a generator of its own: a DataLoader's iterator draws a seed, which from the global stream
    # would move every dropout mask of the training after it
    loader = DataLoader(first, batch_size=args.per_device_eval_batch_size, collate_fn=collate,
                        generator=torch.Generator())
    model.to(device)
    if pair_encoding(model) == "bi":
        # a bi-encoder's encoder reads each sentence alone: it is calibrated on both sides' sentences
        batches = [{"input_ids": batch[f"input_ids_{side}"].to(device),
                    "attention_mask": batch[f"attention_mask_{side}"].to(device)}
                   for batch in loader for side in ("a", "b")]
        model = model.bert
    else:
        batches = [{key: value.to(device) for key, value in batch.items() if key in inputs} for batch in loader]
    if args.calibrate_thresholds is not None:
        logger.info(f"--calibrate_thresholds: thresholds for a firing rate of {args.calibrate_thresholds} on "
                    f"{len(first)} train examples")
        conversion.calibrate_thresholds(model, batches, args.calibrate_thresholds, log=logger.info)
    if not args.calibrate_conversion:
        return
    logger.info(f"--calibrate_conversion: fitting each neuron's spike map on {len(first)} train examples")
    fidelity = conversion.calibrate_spike_maps(model, batches, log=logger.info)
    logger.info(f"--calibrate_conversion: mean fidelity (R^2) {sum(fidelity.values()) / len(fidelity):.3f}")


def map_attention(args) -> dict:
    """``from_pretrained`` settings of a BERT that must return its attention maps: the eager
    attention (transformers' SDPA and flash paths return none)."""
    return {"attn_implementation": "eager"} if args.kd_attention_weight > 0 else {}


def load_teacher(args, num_labels: int, device):
    _, teacher = zoo.load_checkpoint(args.teacher, "--teacher", **map_attention(args))
    if teacher.config.num_labels != num_labels:
        raise ValueError(
            f"--teacher {args.teacher} has {teacher.config.num_labels} labels, task {args.task_name} needs {num_labels}"
        )
    wanted = args.pair_encoding or "cross"
    if pair_encoding(teacher) != wanted:
        raise ValueError(f"--teacher {args.teacher} is a {pair_encoding(teacher)}-encoder and the student a "
                         f"{wanted}-encoder (--pair_encoding {wanted}): the two must read the same inputs; use "
                         "the student's ANN twin, trained with the same --pair_encoding")
    teacher.requires_grad_(False)
    return teacher.eval().to(device)


HEAD_PREFIX = "classifier."  # the task head's parameters: new for each task unless the start has one


def parameter_groups(model, args):
    """AdamW groups: decayed weights, undecayed biases/LayerNorm, the neurons' own parameters
    with the attention score scales (a few scalars each, like thresholds: ``--neuron_lr``), and,
    with ``--head_lr``, the task head's weights and biases (:data:`HEAD_PREFIX`, decayed as the
    encoder's are)."""
    from spikingjelly.activation_based.neuron import BaseNode

    neuron_params = {id(p) for m in model.modules() if isinstance(m, BaseNode) for p in m.parameters()}
    neuron_params |= {id(p) for name, p in model.named_parameters() if name.endswith(".score_scale")}
    if args.neuron_lr is not None and not neuron_params:
        logger.warning("--neuron_lr: the model has no spiking-neuron parameters; ignored")
    head_lr = getattr(args, "head_lr", None)  # distill_base.py's args have none: it trains an encoder alone
    no_decay = ("bias", "LayerNorm.weight")
    groups = {"decay": [], "no_decay": [], "neuron": [], "head_decay": [], "head_no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head = "head_" if head_lr is not None and name.startswith(HEAD_PREFIX) else ""
        if id(param) in neuron_params:
            groups["neuron"].append(param)
        elif any(nd in name for nd in no_decay):
            groups[head + "no_decay"].append(param)
        else:
            groups[head + "decay"].append(param)
    if head_lr is not None and not groups["head_decay"] + groups["head_no_decay"]:
        logger.warning(f"--head_lr: the model has no task head ({HEAD_PREFIX}*; an STS-B bi-encoder scores by "
                       "cosine); ignored")
    out = [
        {"params": groups["decay"], "weight_decay": args.weight_decay},
        {"params": groups["no_decay"], "weight_decay": 0.0},
    ]
    if groups["neuron"]:
        lr = args.learning_rate if args.neuron_lr is None else args.neuron_lr
        out.append({"params": groups["neuron"], "weight_decay": 0.0, "lr": lr})
    for name, decay in (("head_decay", args.weight_decay), ("head_no_decay", 0.0)):
        if groups[name]:
            out.append({"params": groups[name], "weight_decay": decay, "lr": head_lr})
    return out


def optimizer_step(accelerator, loss, optimizer, lr_scheduler) -> None:
    """Backward, then the optimizer's step (accelerate holds it back until the last batch of a
    gradient accumulation) and the scheduler's, stepped by hand once per optimizer update: an
    accelerate-prepared scheduler steps once per process, and not where a scaler skipped it."""
    accelerator.backward(loss)
    optimizer.step()
    if accelerator.sync_gradients and not optimizer.step_was_skipped:
        lr_scheduler.step()
    optimizer.zero_grad()


def out_of_time(deadline, accelerator, shared_check: bool = True) -> bool:
    """Whether the ``--max_minutes`` budget is spent (``deadline``: a :data:`wall_clock` time; None:
    no budget). Several processes decide together, only where ``shared_check`` (every process
    passes the same value): one stopping alone would leave the others waiting in a collective."""
    if deadline is None:
        return False
    if accelerator.num_processes == 1:
        return wall_clock() >= deadline
    if not shared_check:
        return False
    late = torch.tensor(float(wall_clock() >= deadline), device=accelerator.device)
    return accelerator.reduce(late, reduction="sum").item() > 0


def write_checkpoint(accelerator, output_dir: str, name: str, manifest: dict, completed_steps: int, epoch: int,
                     batches_seen: int, batches_per_epoch: int) -> None:
    """Save the training state (``accelerator.save_state``), :data:`STATE_FILE` (where to go on:
    the epoch and the batches of it already seen) and the run's manifest as ``output_dir/name``.
    Written under ``.tmp-<name>`` and renamed when complete: ``step_N``/``epoch_N`` are never
    half-written."""
    if batches_seen >= batches_per_epoch:
        epoch, batches_seen = epoch + 1, 0
    final = os.path.join(output_dir, name)
    tmp = os.path.join(output_dir, f".tmp-{name}")
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"completed_steps": completed_steps, "epoch": epoch, "batches_in_epoch": batches_seen}
        write_json(os.path.join(tmp, STATE_FILE), state)
        write_json(os.path.join(tmp, RUN_FILE), manifest)  # which run this checkpoint continues
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()


def find_latest_checkpoint(output_dir: str) -> str:
    """The complete ``step_N``/``epoch_N`` folder of ``output_dir`` with the most optimizer steps."""
    found = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            path = os.path.join(output_dir, name)
            if _CHECKPOINT_NAME.match(name) and os.path.isfile(os.path.join(path, STATE_FILE)):
                steps = read_json(os.path.join(path, STATE_FILE))["completed_steps"]
                found.append((steps, os.path.getmtime(path), path))
    if not found:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no step_N or epoch_N checkpoint in {output_dir}")
    return max(found)[2]


COMPILED_PREFIX = "_orig_mod."  # what torch.compile's OptimizedModule puts before every state-dict key

# The settings that define a run: any other value is another run, whose folder or checkpoints
# must not be mixed with this one's. Left out: how long it runs (--num_train_epochs,
# --max_train_steps, --max_minutes: a run may be resumed and run longer), where and how often
# it saves, eval and energy settings, tracking.
RUN_FIELDS = (
    "task_name", "model_name_or_path", "data_dir", "max_train_samples", "max_length", "pad_to_max_length",
    "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay",
    "lr_scheduler_type", "num_warmup_steps", "seed", "pair_encoding", *SNN_FLAGS, "neuron_lr", "head_lr", "teacher",
    "kd_alpha", "kd_temperature", "kd_hidden_weight", "kd_attention_weight", "freeze_embeddings",
    "calibrate_conversion", "calibrate_thresholds", "spike_rate_weight",
)
# What finetune.py writes into --output_dir besides checkpoints: --overwrite_output_dir removes
# these (and only these, so a user's own files in the folder survive).
FINAL_FILES = (
    RUN_FILE, "all_results.json", "README.md", "energy.json", "config.json", "generation_config.json",
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "added_tokens.json",
    "chat_template.jinja",
)
_SHARD = re.compile(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$")
RESULT_FILES = ("all_results.json", "README.md")  # describe the model beside them: go before it changes


PATH_FIELDS = ("model_name_or_path", "data_dir", "teacher", "text_file")  # recorded as absolute paths


def run_manifest(args, accelerator, script: str = SCRIPT, fields=RUN_FIELDS) -> dict:
    """The run's identity: ``fields`` of ``args`` (local paths made absolute) and the process
    layout, as written by ``script``."""
    def plain(name):
        value = getattr(args, name)
        value = getattr(value, "value", value)  # SchedulerType -> "linear"
        if name in PATH_FIELDS and isinstance(value, str) and os.path.exists(value):
            value = os.path.realpath(value)
        return value

    run = {name: plain(name) for name in fields}
    run.update(num_processes=accelerator.num_processes, mixed_precision=str(accelerator.mixed_precision))
    return {"script": script, "run": run}


def _flag(name: str) -> str:
    return {"task_name": "--task_name", "num_processes": "number of processes",
            "mixed_precision": "mixed precision"}.get(name, f"--{name}")


def run_differences(recorded: dict, manifest: dict) -> list[str]:
    """``"--seed: 0 there, 1 here"`` for each setting where a recorded run differs from this one.
    A setting the recorded run predates (a flag added since, such as ``--calibrate_thresholds``)
    is the same when it is unset here: that run ran without it, so a run cut short on one
    version of the recipe resumes on the next."""
    there, here = recorded.get("run", {}), manifest["run"]
    return [f"{_flag(k)}: {there.get(k)} there, {here[k]} here" for k in here
            if (there[k] != here[k] if k in there else here[k] is not None)]


def check_output_dir(args, manifest: dict) -> bool:
    """Whether ``--output_dir`` holds another run to be replaced (only with ``--overwrite_output_dir``).

    Fine: a missing or empty folder (or one with only a manifest), or one whose
    ``run_manifest.json`` is this run's.
    :raises ValueError: naming the folder and every differing setting, for another run's folder
        or a non-empty folder without a manifest, unless ``--overwrite_output_dir``
    """
    folder = args.output_dir
    if not os.path.isdir(folder) or not set(os.listdir(folder)) - {RUN_FILE}:
        return False  # a run that stopped before writing anything holds nothing to mix with
    path = os.path.join(folder, RUN_FILE)
    if os.path.isfile(path):
        differences = run_differences(read_json(path, "run manifest"), manifest)
        if not differences:
            return False
        problem = f"--output_dir {folder} holds another run ({RUN_FILE}): {'; '.join(differences)}"
    else:
        problem = f"--output_dir {folder} is not empty and has no {RUN_FILE}, so it cannot be told to hold this run"
    if args.overwrite_output_dir:
        return True
    raise ValueError(f"{problem}. Pass --overwrite_output_dir to replace it, or choose another --output_dir")


def clear_output_dir(folder: str) -> None:
    """Remove another run's checkpoints and the files of :data:`FINAL_FILES` from ``folder``."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and (_CHECKPOINT_NAME.match(name) or name.startswith(".tmp-") or name == "sj_bert_glue"):
            shutil.rmtree(path)
        elif os.path.isfile(path) and (name in FINAL_FILES or _SHARD.match(name)):
            os.remove(path)


def check_checkpoint_run(checkpoint: str, manifest: dict) -> None:
    """:raises ValueError: when ``checkpoint`` was written by another run, or records no run."""
    path = os.path.join(checkpoint, RUN_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"--resume_from_checkpoint: {checkpoint} has no {RUN_FILE}, so it cannot be told to belong to "
            "this run (written by an older finetune.py?); start a new run instead"
        )
    differences = run_differences(read_json(path, "run manifest"), manifest)
    if differences:
        raise ValueError(f"--resume_from_checkpoint: {checkpoint} belongs to another run: {'; '.join(differences)}")


def prepare_output_dir(args, accelerator, manifest: dict):
    """Check ``--resume_from_checkpoint`` and ``--output_dir`` against this run's ``manifest``
    before anything is written, then (main process) create the folder, clear another run's
    files where ``--overwrite_output_dir`` allows it, and write the manifest. Returns the
    checkpoint folder to resume from, or None.
    :raises FileNotFoundError, ValueError: naming the flag, for a missing, foreign or
        incomplete checkpoint, or a folder holding another run
    """
    checkpoint = None
    if args.resume_from_checkpoint:
        checkpoint = args.resume_from_checkpoint
        if checkpoint == "latest":
            checkpoint = find_latest_checkpoint(args.output_dir)
        elif not os.path.isdir(checkpoint):
            raise FileNotFoundError(f"--resume_from_checkpoint: checkpoint folder not found: {checkpoint}")
        if not os.path.isfile(os.path.join(checkpoint, STATE_FILE)):
            script = os.path.basename(manifest["script"])
            raise ValueError(f"--resume_from_checkpoint: {checkpoint} has no {STATE_FILE}; not a {script} checkpoint")
    if args.output_dir is not None:
        # every process checks (read only) and raises the same error; the main one writes
        replace = check_output_dir(args, manifest)
        if checkpoint is not None:
            check_checkpoint_run(checkpoint, manifest)
            if replace and os.path.realpath(checkpoint).startswith(os.path.realpath(args.output_dir) + os.sep):
                raise ValueError(f"--overwrite_output_dir would remove {checkpoint}, the checkpoint to resume from")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            os.makedirs(args.output_dir, exist_ok=True)
            if replace:
                clear_output_dir(args.output_dir)
            write_json(os.path.join(args.output_dir, RUN_FILE), manifest)
    elif checkpoint is not None:
        check_checkpoint_run(checkpoint, manifest)
    accelerator.wait_for_everyone()
    return checkpoint


def save_final_model(accelerator, model, tokenizer, output_dir: str) -> None:
    """Save the model and tokenizer into ``output_dir`` as one set.

    They are written to ``output_dir/.tmp-final`` and then moved in file by file, after the
    previous results and card (:data:`RESULT_FILES`) are removed: at no moment does the folder
    pair new weights with old results, and a failed save (a full disk) leaves no partial model.
    :raises OSError: naming the folder and the last checkpoint, when the save fails
    """
    staging = os.path.join(output_dir, ".tmp-final")
    if accelerator.is_main_process and os.path.exists(staging):
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    try:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)  # the module inside torch.compile's wrapper
        state_dict = accelerator.get_state_dict(model)  # a collective under FSDP: every process calls it
        if state_dict is not None:
            # under `accelerate launch --dynamo_backend ...` the model is compiled and its keys
            # carry torch.compile's wrapper prefix; the saved names are BERT's (public API)
            state_dict = {key.removeprefix(COMPILED_PREFIX): value for key, value in state_dict.items()}
        unwrapped.save_pretrained(
            staging,
            is_main_process=accelerator.is_main_process,
            save_function=accelerator.save,
            state_dict=state_dict,
        )
        if accelerator.is_main_process:
            tokenizer.save_pretrained(staging)
    except OSError as error:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        try:
            kept = f"; the training so far is in {find_latest_checkpoint(output_dir)}"
        except FileNotFoundError:
            kept = " (no checkpoint: pass --checkpointing_steps to keep the training through such failures)"
        raise OSError(
            error.errno, f"saving the trained model to {output_dir} failed ({error.strerror or error}); "
            f"the folder was left as it was{kept}"
        ) from error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name in RESULT_FILES:
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
        # weights of another layout (one file or shards) would sit beside the new ones
        stale = [n for n in os.listdir(output_dir) if _SHARD.match(n)] + [
            "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"]
        move_into(staging, output_dir, stale=stale)
    accelerator.wait_for_everyone()


def main(argv=None):
    started = wall_clock()  # --max_minutes counts from here: loading and tokenizing are part of the budget
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    accelerator_kwargs = {}
    if args.with_tracking:
        accelerator_kwargs = {"log_with": args.report_to, "project_dir": args.output_dir}
    accelerator = _common.make_accelerator(
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
    args.model_name_or_path = args.model_name_or_path or sj_bert.offline_bert()
    zoo.resolve_checkpoint(args.model_name_or_path, "--model_name_or_path")  # a typo fails before any writing
    if args.teacher:
        zoo.resolve_checkpoint(args.teacher, "--teacher")
    manifest = run_manifest(args, accelerator)
    checkpoint = prepare_output_dir(args, accelerator, manifest)

    task = args.task_name
    regression = glue.is_regression(task)
    with accelerator.main_process_first():
        raw = glue.load_glue(task, args.data_dir)
    raw["train"] = glue.first_rows(raw["train"], args.max_train_samples)
    eval_splits = glue.eval_splits(task)
    for split in eval_splits:
        raw[split] = glue.first_rows(raw[split], args.max_eval_samples)
    for split in ("train", *eval_splits):
        if len(raw[split]) == 0:  # caught here, not after training
            raise ValueError(f"GLUE {task} {split} split ({args.data_dir or glue.HUB_DATASET}) has no rows")

    tokenizer, model = load_model(args, glue.num_labels(task))
    if args.freeze_embeddings:
        model.base_model.embeddings.requires_grad_(False)  # parameter_groups skips frozen parameters
    teacher = load_teacher(args, glue.num_labels(task), accelerator.device) if args.teacher else None
    # the layer-by-layer terms ask both models for their states and attention maps
    with_hidden, with_maps = args.kd_hidden_weight > 0, args.kd_attention_weight > 0
    if teacher is not None:
        # the encoders' configs: a bi-encoder's layers are its encoder's
        _distill.check_layer_terms(model.base_model, teacher.base_model, args.teacher, with_hidden, with_maps)

    # hooks on the neurons, on for the whole run; they count train() forwards only, not scoring
    spike_rate = SpikeRate(model) if args.spike_rate_weight > 0 else None

    with accelerator.main_process_first():
        processed = glue.tokenize(raw, task, tokenizer, args.max_length, args.pad_to_max_length,
                                  pair_encoding=pair_encoding(model))
    collate = glue.make_collator(tokenizer, args.pad_to_max_length, accelerator.mixed_precision, pair_encoding(model))
    if args.calibrate_conversion or args.calibrate_thresholds is not None:
        calibrate_conversion(model, processed["train"], collate, args, accelerator.device, resumed=checkpoint is not None)
    train_dataloader = DataLoader(
        processed["train"], shuffle=True, collate_fn=collate, batch_size=args.per_device_train_batch_size,
        generator=torch.Generator(),
    )
    eval_dataloaders = glue.eval_dataloaders(processed, eval_splits, collate, args.per_device_eval_batch_size)

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
        write_checkpoint(accelerator, args.output_dir, name, manifest, completed_steps, epoch, batches_seen,
                         len(train_dataloader))

    completed_steps, starting_epoch, resume_batches = 0, 0, 0
    if checkpoint is not None:
        accelerator.print(f"Resumed from checkpoint: {checkpoint}")
        accelerator.load_state(checkpoint)
        state = read_json(os.path.join(checkpoint, STATE_FILE))
        completed_steps, starting_epoch, resume_batches = (
            state["completed_steps"], state["epoch"], state["batches_in_epoch"]
        )

    progress_bar = tqdm(range(args.max_train_steps), disable=not accelerator.is_local_main_process)
    progress_bar.update(completed_steps)
    # Sums over this run's batches of the loss optimized and its LossTerms: the hard (label)
    # loss, the teacher's logit term, its hidden-state term, its attention term and the firing rate.
    run_sums = torch.zeros(1 + len(_distill.LossTerms._fields), device=accelerator.device)
    run_batches = 0
    last_epoch = None  # (epoch, its loss sums, its batches) when this run trained its last epoch

    def loss_fields(means: list) -> dict:
        """The train_* fields of mean loss sums ``[loss, *LossTerms]``: the terms this run has,
        and the label loss alone wherever train_loss holds more."""
        return {
            "train_loss": means[0],
            **({"train_hard_loss": means[1]} if teacher is not None or spike_rate is not None else {}),
            **({"train_kd_loss": means[2]} if teacher is not None else {}),
            **({"train_hidden_loss": means[3]} if with_hidden else {}),
            **({"train_attention_loss": means[4]} if with_maps else {}),
            **({"train_spike_rate": means[5]} if spike_rate is not None else {}),
        }

    def log_epoch(epoch: int, results: dict, sums: torch.Tensor, batches: int) -> None:
        logger.info(f"epoch {epoch}: {results}")
        if args.with_tracking:
            means = (sums / max(batches, 1)).tolist()
            log = {**results, **loss_fields(means), "epoch": epoch, "step": completed_steps}
            accelerator.log(log, step=completed_steps)

    if spike_rate is not None:
        spike_rate.attach()
    deadline = None if args.max_minutes is None else started + 60.0 * args.max_minutes
    stopped_early = out_of_time(deadline, accelerator)  # loading may have spent it: then no step is taken
    for epoch in range(starting_epoch, args.num_train_epochs):
        if completed_steps >= args.max_train_steps or stopped_early:
            break
        model.train()
        train_dataloader.set_epoch(epoch)
        skip = resume_batches if epoch == starting_epoch else 0
        active = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        epoch_sums, epoch_batches = torch.zeros_like(run_sums), 0
        for step, batch in enumerate(active, start=skip):
            with accelerator.accumulate(model):
                # the real tokens of the sentences the encoder runs (a bi-encoder: both sides,
                # stacked), for the terms that read the encoder's layout; not built otherwise
                token_mask = real_token_mask(batch) if spike_rate is not None or teacher is not None else None
                if spike_rate is not None:
                    spike_rate.reset(token_mask)
                outputs = model(**batch, output_hidden_states=with_hidden, output_attentions=with_maps)
                loss = outputs.loss
                terms = _distill.LossTerms.hard_only(loss)
                if teacher is not None:
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    with torch.no_grad(), accelerator.autocast():
                        teacher_outputs = teacher(**inputs, output_hidden_states=with_hidden,
                                                  output_attentions=with_maps)
                    loss, terms = _distill.combined_loss(outputs, teacher_outputs, token_mask, args, regression)
                if spike_rate is not None:
                    rate = spike_rate.rate()
                    loss = loss + args.spike_rate_weight * rate
                    terms = terms._replace(spike_rate=rate)
                epoch_sums += torch.stack([loss, *terms]).detach().float()
                epoch_batches += 1
                optimizer_step(accelerator, loss, optimizer, lr_scheduler)
            if accelerator.sync_gradients:
                progress_bar.update(1)
                completed_steps += 1
                if isinstance(args.checkpointing_steps, int) and completed_steps % args.checkpointing_steps == 0:
                    save_checkpoint(f"step_{completed_steps}", epoch, step + 1)
                if completed_steps >= args.max_train_steps:
                    break
                if out_of_time(deadline, accelerator, completed_steps % BUDGET_SYNC_EVERY == 0):
                    stopped_early = True
                    break

        run_sums += epoch_sums
        run_batches += epoch_batches
        if completed_steps >= args.max_train_steps or epoch == args.num_train_epochs - 1 or stopped_early:
            last_epoch = (epoch, epoch_sums, epoch_batches)  # scored after the model is saved
        else:
            log_epoch(epoch, glue.evaluate(model, eval_dataloaders, accelerator, task), epoch_sums, epoch_batches)
        if stopped_early:
            # where a later run with --resume_from_checkpoint latest continues (unless just saved)
            saved = isinstance(args.checkpointing_steps, int) and completed_steps % args.checkpointing_steps == 0
            if args.checkpointing_steps is not None and not saved:
                save_checkpoint(f"step_{completed_steps}", epoch, step + 1)
        elif args.checkpointing_steps == "epoch":
            save_checkpoint(f"epoch_{epoch}", epoch, step + 1)
    if spike_rate is not None:
        spike_rate.detach()
    stop_reason = None
    if stopped_early:
        stop_reason = (f"--max_minutes {args.max_minutes:g} reached: stopped at step {completed_steps} of "
                       f"{args.max_train_steps} ({completed_steps / num_update_steps_per_epoch:.2f} of "
                       f"{args.num_train_epochs} epochs)")
        logger.warning(stop_reason)

    # The trained model is saved before anything that can fail after training (scoring, the
    # energy report, the card); results and card are written only after it.
    if args.output_dir is not None:
        save_final_model(accelerator, model, tokenizer, args.output_dir)
    results = glue.evaluate(model, eval_dataloaders, accelerator, task)
    if last_epoch is not None:
        log_epoch(last_epoch[0], results, *last_epoch[1:])
    if args.with_tracking:
        accelerator.end_training()

    loss_means = accelerator.reduce(run_sums / max(run_batches, 1), reduction="mean").tolist()
    results = {
        "task": task,
        **results,
        "train_samples": len(processed["train"]),
        "train_steps": completed_steps,
        "epochs": args.num_train_epochs,
        # a run cut by --max_minutes scores the model where it stopped (its schedule not finished)
        "planned_steps": args.max_train_steps,
        "epochs_trained": round(completed_steps / num_update_steps_per_epoch, 3),
        "stopped_early": stopped_early,
        **({"stop_reason": stop_reason} if stopped_early else {}),
        **loss_fields(loss_means),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "command": _common.command_line(SCRIPT, argv, accelerator),
    }

    if args.output_dir is not None:
        unwrapped = accelerator.unwrap_model(model)
        if accelerator.is_main_process:
            energy_text = None
            if is_spiking(unwrapped):
                # Measured on the saved model: under FSDP the live one is sharded across processes.
                _, saved = zoo.load_checkpoint(Path(args.output_dir))  # a path: never read as a zoo name
                split = processed[eval_splits[0]]
                report = energy_on_dataset(saved.to(accelerator.device), split, collate, args.energy_samples)
                results["energy"] = report.to_dict()
                results["energy_samples"] = min(args.energy_samples, len(split))
                energy_text = report.format()
            started_from = Path(args.model_name_or_path) / "all_results.json"  # a finetune.py run's
            if args.model_name_or_path == sj_bert.offline_bert():
                base = "MiniLM-L6-H384 (`sentence-transformers/all-MiniLM-L6-v2`, offline copy)"
            else:
                base = zoo.base_description(args.model_name_or_path,
                                            read_json(started_from) if started_from.is_file() else None)
            card = zoo.model_card(results, unwrapped.config, base, energy_text)
            write_text(os.path.join(args.output_dir, "README.md"), card)
            # last: a folder holding all_results.json holds the model and card it describes
            write_json(os.path.join(args.output_dir, "all_results.json"), results)
        accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main()
