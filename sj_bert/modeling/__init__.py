"""SNN-BERT models, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_spiking_bert import SpikingBertConfig
from .modeling_spiking_bert import (
    SpikingBertForSequenceClassification,
    SpikingBertModel,
    SpikingBertPreTrainedModel,
)

AutoConfig.register(SpikingBertConfig.model_type, SpikingBertConfig, exist_ok=True)
AutoModel.register(SpikingBertConfig, SpikingBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(SpikingBertConfig, SpikingBertForSequenceClassification, exist_ok=True)

__all__ = [
    "SpikingBertConfig",
    "SpikingBertForSequenceClassification",
    "SpikingBertModel",
    "SpikingBertPreTrainedModel",
]
