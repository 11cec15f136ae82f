"""SNN-BERT models, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_spiking_bert import SpikingBertConfig
from .modeling_bi_encoder import BertBiEncoder, BertBiEncoderConfig, SpikingBertBiEncoder, SpikingBertBiEncoderConfig
from .modeling_spiking_bert import (
    SpikingBertForSequenceClassification,
    SpikingBertModel,
    SpikingBertPreTrainedModel,
)

AutoConfig.register(SpikingBertConfig.model_type, SpikingBertConfig, exist_ok=True)
AutoModel.register(SpikingBertConfig, SpikingBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(SpikingBertConfig, SpikingBertForSequenceClassification, exist_ok=True)
# the bi-encoders load through AutoModelForSequenceClassification too (the zoo, evaluate.py):
# a checkpoint's model_type says which pair encoding it was trained with
for _config, _model in ((BertBiEncoderConfig, BertBiEncoder), (SpikingBertBiEncoderConfig, SpikingBertBiEncoder)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForSequenceClassification.register(_config, _model, exist_ok=True)

__all__ = [
    "BertBiEncoder",
    "BertBiEncoderConfig",
    "SpikingBertBiEncoder",
    "SpikingBertBiEncoderConfig",
    "SpikingBertConfig",
    "SpikingBertForSequenceClassification",
    "SpikingBertModel",
    "SpikingBertPreTrainedModel",
]
