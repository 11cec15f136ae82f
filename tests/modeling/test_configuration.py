"""SpikingBertConfig: validation, defaults, conversion of a plain BERT config."""

import logging

import pytest
from transformers import BertConfig

from sj_bert import SpikingBertConfig
from sj_bert.modeling.configuration_spiking_bert import FUSED_SURROGATES, surrogate_names
from sj_bert.ops.bpsn.dispatch import fused_surrogate_spec


def test_defaults_and_bert_fields():
    config = SpikingBertConfig(hidden_size=32, num_attention_heads=4)
    assert config.model_type == "spiking_bert"
    assert (config.coding, config.neuron, config.attention, config.time_steps) == ("individual", "bpsn", "softmax", 4)
    assert config.hidden_size == 32 and config.num_hidden_layers == BertConfig().num_hidden_layers
    assert isinstance(config, BertConfig)


def test_repeat_coding_defaults_to_lif():
    assert SpikingBertConfig(coding="repeat").neuron == "lif"
    assert SpikingBertConfig(coding="repeat", neuron="bpsn").neuron == "bpsn"


@pytest.mark.parametrize(
    "field, value",
    [("coding", "rate"), ("neuron", "izhikevich"), ("attention", "linear"), ("surrogate", "Gauss"), ("direction", "up")],
)
def test_unknown_choice_names_field_and_allowed_values(field, value):
    with pytest.raises(ValueError, match=rf"{field}='{value}' is not supported; expected one of"):
        SpikingBertConfig(**{field: value})


@pytest.mark.parametrize("kwargs, match", [
    (dict(time_steps=0), "time_steps must be a positive int"),
    (dict(tau=1.0), "tau must be a number > 1"),
    (dict(coding="repeat", per_channel=True), "per_channel, learnable_threshold and ternary_spikes are BPSN settings"),
    (dict(coding="repeat", ternary_spikes=["intermediate.neuron"]), "ternary_spikes are BPSN settings"),
    (dict(ternary_spikes=["intermediate.neuron", "ffn"]), r"ternary_spikes names \['ffn'\], not neuron sites"),
    (dict(site_thresholds={"layer.0.intermediate.neuron": 0.5}), "site_thresholds names .*, not neuron sites"),
    (dict(site_thresholds={"intermediate.neuron": 0}), r"site_thresholds\['intermediate.neuron'\] must be a positive"),
    (dict(site_thresholds={"intermediate.neuron": True}), "must be a positive number"),
    (dict(site_thresholds=[("intermediate.neuron", 0.5)]), r"site_thresholds must be a dict \{site: threshold\}"),
])
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpikingBertConfig(**kwargs)


def test_surrogate_is_built_from_its_name():
    assert "ATan" in surrogate_names() and "SurrogateFunctionBase" not in surrogate_names()
    surrogate = SpikingBertConfig(surrogate="Sigmoid", surrogate_alpha=3.0).make_surrogate()
    assert type(surrogate).__name__ == "Sigmoid" and surrogate.alpha == 3.0


def test_bert_config_folder_converts_with_overrides(tmp_path, caplog):
    BertConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        config = SpikingBertConfig.from_pretrained(tmp_path, coding="repeat", time_steps=2)
    assert "instantiate a model of type" not in caplog.text  # converting from BERT is intended
    assert (config.model_type, config.coding, config.neuron, config.time_steps) == ("spiking_bert", "repeat", "lif", 2)
    assert config.hidden_size == 32
    with pytest.raises(ValueError, match="coding='bogus'"):
        SpikingBertConfig.from_pretrained(tmp_path, coding="bogus")


def test_new_coding_brings_its_neuron_unless_named(tmp_path):
    SpikingBertConfig(coding="individual").save_pretrained(tmp_path)
    assert SpikingBertConfig.from_pretrained(tmp_path, coding="repeat").neuron == "lif"
    assert SpikingBertConfig.from_pretrained(tmp_path, coding="repeat", neuron="bpsn").neuron == "bpsn"
    assert SpikingBertConfig.from_pretrained(tmp_path).neuron == "bpsn"


def test_fused_surrogates_are_those_the_kernels_fuse():
    """The one list of fused surrogates agrees with the dispatcher: exactly these (default
    alpha) go to the Triton and CuPy kernels, every other surrogate to the torch path."""
    from spikingjelly.activation_based import surrogate

    fused = set()
    for name in surrogate_names():
        try:
            function = getattr(surrogate, name)()
        except TypeError:  # needs arguments of its own (e.g. MultiLevelSpikeCount): not in the fused set
            continue
        if fused_surrogate_spec(function) is not None:
            fused.add(name)
    assert fused == set(FUSED_SURROGATES)
