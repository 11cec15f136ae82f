"""sj-bert: spiking BERTs for SpikingJelly (SNN-BERT, Neural Networks 180, 2024)."""

from .modeling import (
    BertBiEncoder, SpikingBertBiEncoder, SpikingBertConfig, SpikingBertForSequenceClassification, SpikingBertModel,
)
from .neuron import BPSN, BPSN_CLASS_PATH, register_with_spikingjelly
from .offline import offline_bert

__version__ = "0.1.0"
__all__ = [
    "BPSN",
    "BertBiEncoder",
    "SpikingBertBiEncoder",
    "BPSN_CLASS_PATH",
    "SpikingBertConfig",
    "SpikingBertForSequenceClassification",
    "SpikingBertModel",
    "__version__",
    "from_pretrained",
    "list_pretrained",
    "offline_bert",
    "register_with_spikingjelly",
]

# SpikingJelly's serialized configs (NeuronConfig) find BPSN by class path once registered
register_with_spikingjelly()


def from_pretrained(name_or_path: str, **kwargs):
    """Load a zoo checkpoint by name (``"sst2"``), local folder or hub id; see :mod:`sj_bert.zoo`."""
    from .zoo import from_pretrained as _from_pretrained

    return _from_pretrained(name_or_path, **kwargs)


def list_pretrained(print_table: bool = True) -> list:
    """Names of the zoo's checkpoints (prints the results table); see :mod:`sj_bert.zoo`."""
    from .zoo import list_pretrained as _list_pretrained

    return _list_pretrained(print_table)
