"""Tiny SNN-BERT configs and batches for the modeling tests, handed out by the ``tiny``
fixture (the suite imports test modules with ``--import-mode=importlib``, so helpers cannot
be imported from a sibling module)."""

from __future__ import annotations

import types

import pytest
import torch

from sj_bert import SpikingBertConfig, SpikingBertForSequenceClassification

TINY = dict(
    vocab_size=99,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=24,
    # large enough weights that every neuron fires now and then at init
    initializer_range=0.3,
    v_threshold=0.5,
)


def tiny_config(**overrides) -> SpikingBertConfig:
    return SpikingBertConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> SpikingBertForSequenceClassification:
    torch.manual_seed(seed)
    return SpikingBertForSequenceClassification(tiny_config(**overrides)).eval()


def right_padded(lengths: list[int], vocab: int = 99, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` ``[B, max(lengths)]``, real tokens first; the
    padded positions hold random ids so that any leak would show."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=generator)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids, mask


@pytest.fixture
def tiny() -> types.SimpleNamespace:
    """``tiny.config(**overrides)``, ``tiny.model(seed=0, **overrides)`` (eval mode),
    ``tiny.padded(lengths)`` -> ``(input_ids, attention_mask)``."""
    return types.SimpleNamespace(config=tiny_config, model=tiny_model, padded=right_padded)


@pytest.fixture
def minilm_path() -> str:
    from sj_bert import offline_bert

    try:
        return offline_bert()
    except (ImportError, FileNotFoundError) as err:
        pytest.skip(str(err))
