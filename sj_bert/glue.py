"""GLUE: the nine tasks, their data (hub or classic ``glue_data`` folders) and official metrics,
and scoring a checkpoint on them (tokenizing, label maps, dev-set evaluation over any number of
processes), as the recipes do.

Both sources give the same schema, the hub's (``nyu-mll/glue``): the text columns of
:data:`TASK_TO_KEYS`, ``label`` (a ``ClassLabel`` with the names of :data:`TASK_LABELS`, or a
float for STS-B; ``-1`` in unlabelled test files) and ``idx`` (the row number).

Example::

    >>> from sj_bert import glue
    >>> dev = glue.load_glue("rte", data_dir="shared/data/glue", split="validation")
    >>> dev["validation"].column_names
    ['sentence1', 'sentence2', 'label', 'idx']
    >>> glue.compute_metrics("mrpc", predictions=[1, 0, 1], references=[1, 1, 1])
    {'accuracy': 0.666..., 'f1': 0.8}
"""

from __future__ import annotations

import copy
import csv
import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "TASK_TO_KEYS",
    "TASK_LABELS",
    "TASK_TO_DIR",
    "HUB_DATASET",
    "check_task",
    "task_to_dir",
    "is_pair_task",
    "PAIR_TASKS",
    "PAIR_ENCODINGS",
    "is_regression",
    "num_labels",
    "eval_splits",
    "metric_suffix",
    "check_length_edges",
    "length_bucket",
    "length_buckets",
    "read_glue_file",
    "load_glue",
    "compute_metrics",
    "MAIN_METRIC",
    "train_file",
    "checkpoint_task",
    "label_mapping",
    "tokenize",
    "check_pair_encoding",
    "PairCollator",
    "make_collator",
    "eval_dataloaders",
    "evaluate",
    "load_eval_data",
    "first_rows",
]

HUB_DATASET = "nyu-mll/glue"

# Text columns per task, named as on the hub.
TASK_TO_KEYS = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}

#: the tasks whose examples are sentence pairs
PAIR_TASKS = tuple(task for task, (_, second) in TASK_TO_KEYS.items() if second is not None)
#: how a model reads a pair: ``cross``, both sentences in one input (``[CLS] a [SEP] b [SEP]``,
#: ``*ForSequenceClassification``); ``bi``, each sentence alone (``sj_bert.SpikingBertBiEncoder``)
PAIR_ENCODINGS = ("cross", "bi")


# Label names in id order, as the hub's ClassLabels; None: regression (STS-B, a score in 0-5).
TASK_LABELS = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "stsb": None,
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
}

# The metric each task is ranked by (GLUE's leaderboard: MCC, Pearson, F1, else accuracy), as
# finetune.py and evaluate.py name it; MNLI's is the matched split's accuracy.
MAIN_METRIC = {task: "eval_accuracy" for task in TASK_TO_KEYS} | {
    "cola": "eval_matthews_correlation", "stsb": "eval_pearson", "mrpc": "eval_f1", "qqp": "eval_f1",
}

# Folder of each task in the classic layout written by download_glue_data.py.
TASK_TO_DIR = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}

# Header name in the GLUE file of each text column, and of the label column.
_FILE_TEXT = {
    "cola": {"sentence": "sentence"},
    "sst2": {"sentence": "sentence"},
    "mrpc": {"sentence1": "#1 String", "sentence2": "#2 String"},
    "stsb": {"sentence1": "sentence1", "sentence2": "sentence2"},
    "qqp": {"question1": "question1", "question2": "question2"},
    "mnli": {"premise": "sentence1", "hypothesis": "sentence2"},
    "qnli": {"question": "question", "sentence": "sentence"},
    "rte": {"sentence1": "sentence1", "sentence2": "sentence2"},
    "wnli": {"sentence1": "sentence1", "sentence2": "sentence2"},
}
_FILE_LABEL = {
    "cola": "label",
    "sst2": "label",
    "mrpc": "Quality",
    "stsb": "score",
    "qqp": "is_duplicate",
    "mnli": "gold_label",
    "qnli": "label",
    "rte": "label",
    "wnli": "label",
}
# CoLA's train and dev files have no header line.
_COLA_HEADERLESS = ("source", "label", "original_mark", "sentence")

# Split name -> file name. MNLI has two dev and two test sets; "validation"/"test" name both.
_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_MNLI_SPLIT_FILES = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}


def check_task(task: str) -> str:
    """Return ``task`` lower-cased if it is one of the nine GLUE tasks, else raise ``ValueError``."""
    name = str(task).lower()
    if name not in TASK_TO_KEYS:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of: {', '.join(TASK_TO_KEYS)}")
    return name


def task_to_dir(task: str) -> str:
    """Folder name of ``task`` in the classic layout (``"sst2"`` -> ``"SST-2"``)."""
    return TASK_TO_DIR[check_task(task)]


def is_pair_task(task: str) -> bool:
    """Whether ``task``'s examples are sentence pairs (MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI)."""
    return TASK_TO_KEYS[check_task(task)][1] is not None


def is_regression(task: str) -> bool:
    return TASK_LABELS[check_task(task)] is None


def num_labels(task: str) -> int:
    labels = TASK_LABELS[check_task(task)]
    return 1 if labels is None else len(labels)


def train_file(task: str, data_dir: str) -> str:
    """Where the classic layout keeps ``task``'s train split under ``data_dir``."""
    return os.path.join(_task_folder(task, data_dir), _split_files(task)["train"])


def _split_files(task: str) -> dict:
    return _MNLI_SPLIT_FILES if check_task(task) == "mnli" else _SPLIT_FILES


def eval_splits(task: str) -> list:
    """The dev splits scored for ``task``: ``["validation"]``, or MNLI's matched and mismatched."""
    return [s for s in _split_files(task) if s.startswith("validation")]


def metric_suffix(split: str) -> str:
    """Suffix of a split's metric names in flat results: ``"_mm"`` for MNLI mismatched, as run_glue.py;
    a length bucket of a split (``"validation@len_10_20"``, :func:`length_buckets`) adds its own."""
    split, _, bucket = split.partition("@")
    return ("_mm" if split.endswith("_mismatched") else "") + (f"_{bucket}" if bucket else "")


def check_length_edges(edges: Sequence[int], what: str = "length buckets") -> list[int]:
    """``edges`` as a list when they are increasing positive token counts; else a ValueError
    naming ``what`` (the flag that gave them)."""
    edges = list(edges)
    if not edges or any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"{what}: expected increasing positive token counts, got {edges}")
    return edges


def _bucket_bounds(edges: Sequence[int]) -> list[tuple[int, Optional[int]]]:
    """``(low, high)`` of each bucket, in order; ``high`` None for the last, open one."""
    return list(zip([0, *edges], [*edges, None]))


def length_bucket(length: int, edges: Sequence[int]) -> str:
    """The name of the bucket holding ``length`` tokens: ``len_a_b`` (``a <= length < b``) or
    ``len_a_plus`` for the last; ``edges`` as :func:`check_length_edges` accepts them."""
    for low, high in _bucket_bounds(edges):
        if length >= low and (high is None or length < high):
            return f"len_{low}_{high}" if high is not None else f"len_{low}_plus"
    raise ValueError(f"length {length} is negative")


def length_buckets(processed, split: str, edges: Sequence[int]) -> dict:
    """``processed[split]`` cut by tokenized length (``[CLS]`` and ``[SEP]`` included: under
    individual coding, the time steps T) at ``edges``: ``{"<split>@len_0_10": rows, ...,
    "<split>@len_45_plus": rows}``, empty buckets left out. Scored as splits, each bucket's metrics
    get its suffix (:func:`metric_suffix`), e.g. ``eval_accuracy_len_10_20``.

    :param edges: increasing positive token counts; bucket ``len_a_b`` holds lengths ``a <= n < b``
    """
    edges = check_length_edges(edges)
    rows = processed[split]
    if "input_ids" in rows.column_names:
        lengths = [len(ids) for ids in rows["input_ids"]]
    else:  # a bi-encoder's rows: the longer sentence, the steps the pair's batch runs for
        lengths = [max(len(a), len(b)) for a, b in zip(rows["input_ids_a"], rows["input_ids_b"])]
    names = [length_bucket(n, edges) for n in lengths]
    buckets = {}
    for low, _ in _bucket_bounds(edges):
        name = length_bucket(low, edges)
        rows = [i for i, n in enumerate(names) if n == name]
        if rows:
            buckets[f"{split}@{name}"] = processed[split].select(rows)
    return buckets


def _expand_splits(task: str, split: Union[None, str, Sequence[str]]) -> list:
    files = _split_files(task)
    if split is None:
        wanted = ["train", *eval_splits(task)]
    else:
        wanted = [split] if isinstance(split, str) else list(split)
    names = []
    for name in wanted:
        # "validation" and "test" stand for both MNLI sets
        matches = [s for s in files if s == name or s.startswith(name + "_")]
        if not matches:
            raise ValueError(f"unknown split {name!r} for GLUE task {task!r}; expected one of: {', '.join(files)}")
        names.extend(m for m in matches if m not in names)
    return names


def _features(task: str):
    import datasets

    first, second = TASK_TO_KEYS[task]
    labels = TASK_LABELS[task]
    columns = {first: datasets.Value("string")}
    if second is not None:
        columns[second] = datasets.Value("string")
    columns["label"] = datasets.Value("float32") if labels is None else datasets.ClassLabel(names=list(labels))
    columns["idx"] = datasets.Value("int32")
    return datasets.Features(columns)


def _parse_label(task: str, value: str, where: str):
    labels = TASK_LABELS[task]
    try:
        if labels is None:
            return float(value)
        if value in labels:
            return labels.index(value)
        index = int(value)
        if 0 <= index < len(labels):
            return index
    except ValueError:
        pass
    expected = "a float score" if labels is None else f"one of {list(labels)} or 0..{len(labels) - 1}"
    raise ValueError(f"{where}: bad {task} label {value!r}; expected {expected}")


def _first_bad_line(path: str) -> int:
    """The number of the first line of ``path`` that is not UTF-8 (only read on that error)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def read_glue_file(path: Union[str, os.PathLike], task: str, require_labels: bool = False):
    """Read one GLUE-format TSV file (train, dev or test of any task) into a ``datasets.Dataset``.

    Columns are found by the file's header (a leading UTF-8 BOM, as in MRPC, is dropped);
    CoLA's header-less train/dev layout ``source label original_mark sentence`` is recognised.
    A file without the label column (a GLUE test file) gets ``label = -1`` on every row, unless
    ``require_labels``, when it is an error.

    :raises FileNotFoundError: naming the file when it does not exist
    :raises ValueError: naming the file, the columns expected and those found, when the layout is
        not the task's; or naming the line, for a row with another number of fields, a bad label or
        bytes that are not UTF-8
    """
    import datasets

    task = check_task(task)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GLUE {task} data file not found: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}:{_first_bad_line(path)}: not UTF-8 text ({error.reason}); GLUE files are UTF-8") from error
    if not rows:
        raise ValueError(f"{path}: empty file, expected a GLUE {task} file")

    text = _FILE_TEXT[task]
    label_name = _FILE_LABEL[task]
    header, body, first_line = rows[0], rows[1:], 2
    if task == "cola" and "sentence" not in header and len(header) == len(_COLA_HEADERLESS):
        header, body, first_line = list(_COLA_HEADERLESS), rows, 1
    missing = [name for name in text.values() if name not in header]
    if missing:
        expected = list(text.values()) + [label_name]
        if task == "cola":
            expected = f"{expected} (or no header and 4 columns: {', '.join(_COLA_HEADERLESS)})"
        raise ValueError(
            f"{path}: not a GLUE {task} file: missing column(s) {missing}; expected {expected}, found {header}"
        )

    where = {column: header.index(name) for column, name in text.items()}
    label_at = header.index(label_name) if label_name in header else None
    if label_at is None and require_labels:
        raise ValueError(f"{path}: no label column {label_name!r} in GLUE {task} file; found {header}")
    columns = {column: [] for column in text}
    columns["label"] = []
    for number, row in enumerate(body, start=first_line):
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} fields, expected {len(header)} ({header})")
        for column, at in where.items():
            columns[column].append(row[at])
        label = -1 if label_at is None else _parse_label(task, row[label_at], f"{path}:{number}")
        columns["label"].append(label)
    columns["idx"] = list(range(len(body)))
    return datasets.Dataset.from_dict(columns, features=_features(task))


def _task_folder(task: str, data_dir: str) -> str:
    # Accept the glue_data root (holding CoLA/, SST-2/, ...) or the task's own folder; a root
    # without this task's folder is still a root, so a missing file is named under <root>/<TASK>.
    nested = os.path.join(data_dir, task_to_dir(task))
    is_root = any(os.path.isdir(os.path.join(data_dir, folder)) for folder in TASK_TO_DIR.values())
    return nested if is_root else data_dir


def load_glue(task: str, data_dir: Optional[str] = None, split: Union[None, str, Sequence[str]] = None):
    """Load a GLUE task as a ``datasets.DatasetDict``.

    :param task: one of :data:`TASK_TO_KEYS` (case-insensitive)
    :param data_dir: a classic ``glue_data`` folder (the root holding ``CoLA/``, ``SST-2/``, ... or
        the task's own folder); ``None`` loads ``nyu-mll/glue`` from the hub
    :param split: ``None`` (train and the dev splits of :func:`eval_splits`), a split name or a list:
        ``"train"``, ``"validation"``, ``"test"``; for MNLI ``"validation"`` and ``"test"`` stand for
        both their ``_matched`` and ``_mismatched`` splits, which may also be named alone
    :raises FileNotFoundError: naming the missing file
    :raises ValueError: for an unknown task or split, or a file with the wrong columns
    """
    import datasets

    task = check_task(task)
    names = _expand_splits(task, split)
    if data_dir is None:
        loaded = datasets.load_dataset(HUB_DATASET, task)
        return datasets.DatasetDict({name: loaded[name] for name in names})
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"GLUE data_dir not found: {data_dir}")
    folder = _task_folder(task, data_dir)
    files = _split_files(task)
    out = {}
    for name in names:
        out[name] = read_glue_file(os.path.join(folder, files[name]), task, require_labels=not name.startswith("test"))
    return datasets.DatasetDict(out)


def compute_metrics(task: str, predictions: Iterable, references: Iterable) -> dict:
    """The official GLUE metric(s) of ``task``, as floats.

    CoLA: ``matthews_correlation``; STS-B: ``pearson`` and ``spearmanr``; MRPC and QQP: ``accuracy``
    and ``f1`` (of the positive class); every other task: ``accuracy``. MNLI is scored on each of
    its dev splits separately (see :func:`eval_splits`).

    :param predictions: ``[N]`` class ids (float scores for STS-B)
    :param references: ``[N]`` gold labels
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = check_task(task)
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise ValueError(
            f"predictions {predictions.shape} and references {references.shape} must be 1-D of the same length"
        )
    if task == "stsb":
        return {
            "pearson": float(pearsonr(predictions, references)[0]),
            "spearmanr": float(spearmanr(predictions, references)[0]),
        }
    if task == "cola":
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
    metrics = {"accuracy": float(accuracy_score(references, predictions))}
    if task in ("mrpc", "qqp"):
        metrics["f1"] = float(f1_score(references, predictions))
    return metrics


# Scoring checkpoints: what finetune.py, evaluate.py and energy.py do with a task's data.


def checkpoint_task(task: Optional[str], config) -> str:
    """``task`` if given, else the task the checkpoint was fine-tuned on (``config.finetuning_task``)."""
    task = task or getattr(config, "finetuning_task", None)
    if task is None:
        raise ValueError(f"the checkpoint does not record its task; pass --task_name ({', '.join(TASK_TO_KEYS)})")
    return check_task(task)


def label_mapping(config, task: str) -> Optional[dict]:
    """Dataset label id -> model label id, when the model names the task's labels in another order."""
    names = TASK_LABELS[task]
    label2id = {str(k).lower(): v for k, v in (getattr(config, "label2id", None) or {}).items()}
    if names is None or sorted(label2id) != sorted(names):
        return None
    mapping = {i: label2id[name] for i, name in enumerate(names)}
    return None if all(i == j for i, j in mapping.items()) else mapping


def tokenize(raw, task: str, tokenizer, max_length: int, pad_to_max_length: bool, label_to_id: Optional[dict] = None,
             pair_encoding: str = "cross"):
    """Tokenize every split of a GLUE ``DatasetDict``: ``input_ids``, ``attention_mask``, ... and ``labels``.

    :param pair_encoding: ``"cross"`` (a pair task's two sentences in one input, ``[CLS] a [SEP] b
        [SEP]``) or ``"bi"`` (each sentence alone, for a bi-encoder: ``input_ids_a``,
        ``attention_mask_a``, ``input_ids_b``, ``attention_mask_b``, each up to ``max_length``)
    :raises ValueError: for an unknown ``pair_encoding``, or ``"bi"`` with a single-sentence task
    """
    first, second = TASK_TO_KEYS[task]
    check_pair_encoding(pair_encoding, task)
    padding = "max_length" if pad_to_max_length else False

    def encode(*texts):
        # the mask always: a tokenizer may leave it out, and padded batches need it
        return tokenizer(*texts, padding=padding, max_length=max_length, truncation=True, return_attention_mask=True)

    def preprocess(examples):
        if pair_encoding == "bi":
            result = {}
            for side, column in (("a", first), ("b", second)):
                # token types are all 0 for a sentence alone: the encoder's default, not stored
                encoded = encode(examples[column])
                result[f"input_ids_{side}"] = encoded["input_ids"]
                result[f"attention_mask_{side}"] = encoded["attention_mask"]
        else:
            result = encode(*((examples[first],) if second is None else (examples[first], examples[second])))
        labels = examples["label"]
        result["labels"] = labels if label_to_id is None else [label_to_id.get(label, label) for label in labels]
        return result

    return raw.map(
        preprocess,
        batched=True,
        remove_columns=next(iter(raw.values())).column_names,
        desc="Running tokenizer on dataset",
    )


def check_pair_encoding(pair_encoding: str, task: str) -> str:
    """``pair_encoding`` when it is one of ``"cross"``, ``"bi"`` and fits ``task``: a bi-encoder
    needs two sentences. :raises ValueError: naming ``pair_encoding`` and what was expected"""
    if pair_encoding not in PAIR_ENCODINGS:
        raise ValueError(f"pair_encoding must be one of {', '.join(PAIR_ENCODINGS)}, got {pair_encoding!r}")
    if pair_encoding == "bi" and not is_pair_task(task):
        raise ValueError(f"pair_encoding 'bi' encodes the two sentences of a pair apart; GLUE {task} has one "
                         f"sentence per example (pair tasks: {', '.join(PAIR_TASKS)})")
    return pair_encoding


class PairCollator:
    """Pads a bi-encoder batch: each side (``input_ids_a``/``attention_mask_a``, ``_b``) to its
    own longest sentence (a multiple of ``pad_to_multiple_of``), with the tokenizer's padding."""

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = None):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list) -> dict:
        batch = {}
        for side in ("a", "b"):
            rows = [{"input_ids": f[f"input_ids_{side}"], "attention_mask": f[f"attention_mask_{side}"]} for f in features]
            padded = self.tokenizer.pad(rows, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
            batch[f"input_ids_{side}"] = padded["input_ids"]
            batch[f"attention_mask_{side}"] = padded["attention_mask"]
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch


def make_collator(tokenizer, pad_to_max_length: bool, mixed_precision: str = "no", pair_encoding: str = "cross"):
    """The collator of :func:`tokenize`'s rows (``pair_encoding`` as given there)."""
    from transformers import DataCollatorWithPadding, default_data_collator

    if pad_to_max_length:
        return default_data_collator  # every row has its full length already, either encoding
    # Tensor cores want lengths in multiples of 8 (16 for fp8).
    multiple = {"fp8": 16, "fp16": 8, "bf16": 8}.get(str(mixed_precision))
    if "attention_mask" not in tokenizer.model_input_names:
        # padding goes by model_input_names: the mask that tokenize() added must be padded too
        tokenizer = copy.copy(tokenizer)
        tokenizer.model_input_names = [*tokenizer.model_input_names, "attention_mask"]
    if pair_encoding == "bi":
        return PairCollator(tokenizer, pad_to_multiple_of=multiple)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)


def eval_dataloaders(processed, splits, collate, batch_size: int) -> dict:
    from torch.utils.data import DataLoader

    # Own generators: building an iterator draws a seed, which must not move the global RNG
    # (resumed runs replay the global RNG from the checkpoint).
    return {
        split: DataLoader(
            processed[split], collate_fn=collate, batch_size=batch_size, generator=torch.Generator()
        )
        for split in splits
    }


@torch.no_grad()
def evaluate(model, dataloaders: dict, accelerator, task: str) -> dict:
    """Score each dev split; flat results as run_py writes them.

    Keys: ``eval_<metric>`` and ``eval_samples`` per split, suffixed ``_mm`` for MNLI mismatched.
    ``gather_for_metrics`` drops the samples repeated to even out the last batch over processes,
    so every sample of the split counts exactly once.
    """
    regression = is_regression(task)
    was_training = model.training
    model.eval()
    results = {}
    for split, dataloader in dataloaders.items():
        predictions, references = [], []
        for batch in dataloader:
            logits = model(**batch).logits
            predicted = logits.squeeze(-1) if regression else logits.argmax(dim=-1)
            predicted, labels = accelerator.gather_for_metrics((predicted, batch["labels"]))
            predictions.append(predicted.float().cpu() if regression else predicted.cpu())
            references.append(labels.cpu())
        predictions = torch.cat(predictions).numpy()
        references = torch.cat(references).numpy()
        suffix = metric_suffix(split)
        metrics = compute_metrics(task, predictions, references)
        results.update({f"eval_{name}{suffix}": value for name, value in metrics.items()})
        results[f"eval_samples{suffix}"] = int(len(references))
    model.train(was_training)
    return results


@torch.no_grad()
def load_eval_data(task: str, data_dir: Optional[str], file: Optional[str], max_eval_samples: Optional[int]):
    """The dev split(s) of ``task`` (``--data_dir`` or the hub), or one labelled GLUE file as split ``file``."""
    import datasets

    if file is not None:
        raw = datasets.DatasetDict({"file": read_glue_file(file, task, require_labels=True)})
    else:
        raw = load_glue(task, data_dir, split="validation")
    return datasets.DatasetDict({split: first_rows(dataset, max_eval_samples) for split, dataset in raw.items()})


def first_rows(dataset, n: Optional[int]):
    """The first ``n`` rows of ``dataset`` (all of them when ``n`` is None or larger)."""
    return dataset if n is None else dataset.select(range(min(n, len(dataset))))
