"""Fixtures of the modeling tests: the offline MiniLM (the ``tiny`` models are in
``tests/conftest.py``, shared with the energy tests)."""

from __future__ import annotations

import pytest


@pytest.fixture
def minilm_path() -> str:
    from sj_bert import offline_bert

    try:
        return offline_bert()
    except (ImportError, FileNotFoundError) as err:
        pytest.skip(str(err))
