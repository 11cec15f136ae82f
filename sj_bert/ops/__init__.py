"""Fused and reference operators (model code calls the neuron, never these directly)."""
