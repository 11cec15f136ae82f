"""Model cards: the ``README.md`` of a fine-tuned checkpoint and of a published one.

:func:`model_card` is what ``recipes/finetune.py`` writes beside a trained model, from its
results; :func:`published_section` is what ``recipes/publish.py`` appends once the published
files are scored, from the checkpoint's registry record, so the card says what the record says.
"""

from __future__ import annotations

from typing import Optional

from .. import glue
from ..modeling.configuration_spiking_bert import SPIKING_FIELDS, is_spiking
from ..modeling.modeling_bi_encoder import pair_encoding
from .registry import PretrainedRecord

__all__ = ["base_description", "model_card", "published_section"]


def base_description(name: str, results: Optional[dict] = None) -> str:
    """How a card names the checkpoint a run started from (markdown).

    :param name: ``--model_name_or_path`` as given
    :param results: that checkpoint's ``all_results.json`` where it is a finetune.py output (the
        ANN twin of a two-stage run): its dev metric and command are what reproduce the first
        stage, since its folder (a lease's ``/tmp``, say) may not outlive the run
    """
    if not results:
        return f"`{name}`"
    task = results.get("task", "?")
    metric = glue.MAIN_METRIC.get(task)
    value = results.get(metric) if metric else None
    scored = ""
    if value is not None:
        scored = f": {metric.removeprefix('eval_')} {value:.4f} on the {glue.task_to_dir(task)} dev set"
    return f"`{name}` (a finetune.py run{scored}; its command: `{results.get('command', '?')}`)"


BI_ENCODER_NOTE = (
    "A bi-encoder: each sentence of a pair is encoded alone and mean-pooled (`u`, `v`), then compared "
    "(a classifier on `[u, v, |u - v|, u * v]`, or for a score `similarity_scale * cos(u, v)`). Its inputs are "
    "`input_ids_a`, `attention_mask_a`, `input_ids_b`, `attention_mask_b` "
    "(`sj_bert.glue.tokenize(..., pair_encoding=\"bi\")`)."
)


def model_card(results: dict, config, base_model: str, energy_text: Optional[str] = None) -> str:
    """Markdown model card: front matter, dev metrics, architecture, the command line, energy.

    :param results: what finetune.py writes to ``all_results.json``
    :param base_model: the checkpoint fine-tuned from, as the card should name it (markdown)
    :param energy_text: ``EnergyReport.format()`` of a spiking model, shown as a table
    """
    task = results["task"]
    spiking = is_spiking(config)
    kind = f"SNN-BERT ({getattr(config, 'coding', '?')} coding)" if spiking else "BERT (ANN)"
    bi = pair_encoding(config) == "bi"
    if bi:
        kind += " bi-encoder"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "datasets:",
        f"- {glue.HUB_DATASET}",
        "tags:",
        "- sj-bert",
        f"- glue-{task}",
        *(["- spiking-neural-network"] if spiking else []),
        "---",
        "",
        f"# {kind} fine-tuned on GLUE {glue.task_to_dir(task)}",
        "",
        f"Fine-tuned from {base_model} with sj-bert's `recipes/finetune.py`"
        + (" `--pair_encoding bi`." if bi else "."),
        "",
        *([BI_ENCODER_NOTE, ""] if bi else []),
        "## GLUE dev results",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in results.items():
        if key.startswith("eval_"):
            name = key[len("eval_"):]
            name, shown = ("dev " + name, str(value)) if name.startswith("samples") else (name, f"{value:.4f}")
            lines.append(f"| {name} | {shown} |")
    lines += [
        "",
        f"Training samples: {results['train_samples']}, optimizer steps: {results['train_steps']}"
        + (" (MNLI: `_mm` = mismatched dev set)." if task == "mnli" else "."),
        "",
    ]
    if results.get("stopped_early"):
        # the metrics above are of a model whose schedule did not finish: say so where they are read
        lines += [
            f"**Stopped early**: {results.get('stop_reason', 'its time budget ran out')}. "
            f"{results.get('epochs_trained', '?')} of {results.get('epochs', '?')} planned epochs were trained "
            "and the learning-rate schedule did not finish; the same command with "
            "`--resume_from_checkpoint latest` continues it.",
            "",
        ]
    if spiking:
        lines += ["## Architecture", "", "| setting | value |", "|---|---|"]
        lines += [f"| {name} | {getattr(config, name)} |" for name in SPIKING_FIELDS if hasattr(config, name)]
        lines.append("")
    lines += ["## Reproduce", "", "```bash", results["command"], "```", ""]
    if energy_text:
        lines += [
            "## Energy",
            "",
            f"Measured with `sj_bert.energy.energy_report` on {results.get('energy_samples')} dev sentences.",
            "",
            "```",
            energy_text.rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def _int8_note(record: PretrainedRecord) -> str:
    if record.quantized is None:
        return ""
    return (f" (its {len(record.quantized.tensors)} spike-fed weight matrices stored as int8 codes with a float32 "
            "scale per output row, dequantized on loading)")


def published_section(record: PretrainedRecord, dtype: str) -> str:
    """The card section of a published checkpoint: the metrics ``record`` holds (measured on
    the published files, which are ``dtype``; the training copy was fp32), the device it was
    trained on, its notes and its baselines."""
    metrics = "\n".join(f"| {k.removeprefix('eval_')} | {v:.4f} |" for k, v in record.metrics.items())
    baselines = "".join(
        f"\n- {kind}: " + ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in values.items())
        for kind, values in record.baselines.items()
    )
    return (
        f"\n\n## Published checkpoint `{record.name}`\n\n"
        f"Weights in {dtype}{_int8_note(record)}, scored by `recipes/evaluate.py` on the dev set from these files "
        f"(the figures above are the {'fp32 ' if dtype != 'float32' else ''}training copy's):\n\n"
        f"| metric | value |\n|---|---|\n{metrics}\n\n"
        f"Trained on: {record.device}. {record.notes}\n"
        + (f"\nBaselines trained the same way:{baselines}\n" if baselines else "")
    )
