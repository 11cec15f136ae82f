"""sj-bert: spiking BERTs for SpikingJelly (SNN-BERT, Neural Networks 180, 2024)."""

from .neuron import BPSN

__version__ = "0.1.0"
__all__ = ["BPSN", "__version__"]
