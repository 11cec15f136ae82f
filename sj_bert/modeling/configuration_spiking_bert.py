"""SpikingBertConfig: a BertConfig plus the spiking settings (DESIGN section 2).

A plain BERT ``config.json`` (``model_type="bert"``) loads into it unchanged, which is how
``SpikingBertForSequenceClassification.from_pretrained(<any BERT>, coding=...)`` converts an
ANN checkpoint: every BERT field is kept and the spiking fields take their defaults or the
keyword arguments given.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from spikingjelly.activation_based import surrogate as sj_surrogate
from transformers import BertConfig

# one definition, in the operator the setting reaches (imported here for the config's checks)
from ..ops.bpsn._spikingjelly import FUSED_SURROGATES  # re-exported: the config's choices
from ..ops.bpsn.dispatch import AMPLITUDES
from ..ops.bpsn.reference import DIRECTIONS

__all__ = [
    "SpikingBertConfig", "MODEL_TYPE", "CODINGS", "NEURONS", "ATTENTIONS", "DIRECTIONS", "POOLINGS", "AMPLITUDES",
    "SPIKING_FIELDS", "NEURON_SITES", "FUSED_SURROGATES", "surrogate_names", "is_spiking",
]

# config.json's model_type of SNN-BERT, under which the Auto classes know it
MODEL_TYPE = "spiking_bert"
CODINGS = ("individual", "repeat")
NEURONS = ("bpsn", "lif")
ATTENTIONS = ("softmax", "spiking")
POOLINGS = ("cls", "mean")
# the neuron each coding uses when ``neuron`` is not given (the paper's pairing)
DEFAULT_NEURON = {"individual": "bpsn", "repeat": "lif"}
SPIKING_FIELDS = (
    "coding", "time_steps", "neuron", "tau", "v_threshold", "surrogate", "surrogate_alpha",
    "direction", "per_channel", "learnable_threshold", "attention", "neuron_backend", "pooling",
    "spike_amplitude", "ternary_spikes", "attention_score_scale", "site_thresholds",
)
# Where an encoder layer's neurons sit, by their module path inside the layer: the names
# ``ternary_spikes`` and ``site_thresholds`` take. ``attention.self.neuron`` and
# ``intermediate.neuron`` read the residual stream (a LayerNorm output); the Q/K/V neurons
# exist with spiking attention only.
NEURON_SITES = (
    "attention.self.neuron", "attention.self.query_neuron", "attention.self.key_neuron",
    "attention.self.value_neuron", "attention.output.neuron", "intermediate.neuron",
    "intermediate.intermediate_act_fn",
)




def is_spiking(model_or_config) -> bool:
    """Whether a model (or its config) is SNN-BERT: ``config.model_type`` is :data:`MODEL_TYPE`,
    or the config is a :class:`SpikingBertConfig` of another model (the spiking bi-encoder's)."""
    config = getattr(model_or_config, "config", model_or_config)
    return isinstance(config, SpikingBertConfig) or getattr(config, "model_type", None) == MODEL_TYPE


def surrogate_names() -> tuple[str, ...]:
    """Names of SpikingJelly's surrogate classes, the values ``surrogate`` accepts."""
    base = sj_surrogate.SurrogateFunctionBase
    return tuple(
        sorted(
            name for name, obj in vars(sj_surrogate).items()
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base
        )
    )


def _check_sites(field: str, sites) -> None:
    unknown = [site for site in sites if site not in NEURON_SITES]
    if unknown:
        raise ValueError(f"SpikingBertConfig: {field} names {unknown}, not neuron sites; expected some of "
                         f"{', '.join(NEURON_SITES)}")


def _check_choice(field: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"SpikingBertConfig: {field}={value!r} is not supported; expected one of {allowed}")


class SpikingBertConfig(BertConfig):
    r"""Configuration of SNN-BERT: every :class:`~transformers.BertConfig` field, plus

    :param coding: ``"individual"`` (the paper's: one token per time step, ``T = L``) or
        ``"repeat"`` (the baseline: each token's embedding presented ``time_steps`` times)
    :param time_steps: steps per token in repeat coding (ignored by individual coding)
    :param neuron: ``"bpsn"`` (:class:`sj_bert.BPSN`) or ``"lif"`` (SpikingJelly's
        ``LIFNode``); ``None`` picks the coding's own: BPSN for individual, LIF for repeat
    :param tau: membrane time constant (BPSN: decay ``1 - 1/tau`` in both directions)
    :param v_threshold: firing threshold
    :param surrogate: name of a SpikingJelly surrogate class (``"ATan"``, ``"Sigmoid"``, ...)
    :param surrogate_alpha: its ``alpha``; ``None`` keeps the class default
    :param direction: BPSN integration direction, ``"bi"``, ``"forward"`` or ``"backward"``
    :param per_channel: BPSN decays, fusion and threshold per channel instead of shared
    :param learnable_threshold: make the BPSN threshold a parameter
    :param attention: ``"softmax"`` (real-valued scores from spiking Q/K) or ``"spiking"``
        (Q, K, V spikes, no softmax)
    :param neuron_backend: BPSN implementation (``"torch"``, ``"triton"``, ``"cupy"``);
        ``None`` lets the node choose by device. LIF picks its own by device.
    :param pooling: what BERT's pooler reads: ``"cls"`` (the first token, as BERT) or
        ``"mean"`` (the mean over real tokens)
    :param spike_amplitude: ``"threshold"`` (a spike of channel ``c`` carries ``V_th[c]``, a
        per-channel scale the next weight matrix absorbs; with ``v_threshold=1`` the same
        as ``"unit"``) or ``"unit"`` (spikes are 0/1)
    :param ternary_spikes: BPSN fires -1 too, where ``v <= -V_th`` (spikes in {-1, 0, 1},
        SpikingJelly's ternary rule, SpikeLM's bi-spiking); a -1 spike costs the next
        matrix a subtraction, still an accumulate. ``True``: every BPSN; a list of
        :data:`NEURON_SITES`: the neurons there only (for example the two that read the
        residual stream, ``["attention.self.neuron", "intermediate.neuron"]``)
    :param attention_score_scale: softmax attention only: each head's scores ``q.k / sqrt(d)``
        multiplied by a learnable factor (``attention.self.score_scale``, one per head) that
        starts at this value; ``None`` (default): no factor, BERT's scores. Spike-fed Q and K
        give scores far flatter than the ANN's, near-uniform attention
        (``bench/attention_focus.py``). The factor folds into the query projection's weights and
        bias for inference, so it costs no operation.
    :param site_thresholds: ``{site: threshold}`` (sites of :data:`NEURON_SITES`): the
        neurons there start from this threshold instead of ``v_threshold`` (with
        ``spike_amplitude="threshold"`` their spikes carry it too); ``None``: ``v_threshold``
        everywhere
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        coding: str = "individual",
        time_steps: int = 4,
        neuron: Optional[str] = None,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        surrogate: str = "ATan",
        surrogate_alpha: Optional[float] = None,
        direction: str = "bi",
        per_channel: bool = False,
        learnable_threshold: bool = False,
        attention: str = "softmax",
        neuron_backend: Optional[str] = None,
        pooling: str = "cls",
        spike_amplitude: str = "threshold",
        ternary_spikes: Union[bool, list[str]] = False,
        attention_score_scale: Optional[float] = None,
        site_thresholds: Optional[dict[str, float]] = None,
        **kwargs,
    ):
        kwargs.pop("model_type", None)  # a BERT config.json says "bert"; this class is spiking_bert
        super().__init__(**kwargs)
        self.coding = coding
        self.time_steps = time_steps
        self.neuron = DEFAULT_NEURON.get(coding, neuron) if neuron is None else neuron
        self.tau = tau
        self.v_threshold = v_threshold
        self.surrogate = surrogate
        self.surrogate_alpha = surrogate_alpha
        self.direction = direction
        self.per_channel = per_channel
        self.learnable_threshold = learnable_threshold
        self.attention = attention
        self.neuron_backend = neuron_backend
        self.pooling = pooling
        self.spike_amplitude = spike_amplitude
        # a tuple of sites is kept as a list: what config.json holds and gives back
        self.ternary_spikes = list(ternary_spikes) if isinstance(ternary_spikes, tuple) else ternary_spikes
        self.attention_score_scale = attention_score_scale
        self.site_thresholds = site_thresholds
        self.validate_spiking()

    def validate_spiking(self) -> None:
        """Raise a ValueError naming the field for any unsupported spiking setting (the
        models call it again, so settings changed after construction are checked too)."""
        _check_choice("coding", self.coding, CODINGS)
        _check_choice("neuron", self.neuron, NEURONS)
        _check_choice("attention", self.attention, ATTENTIONS)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("spike_amplitude", self.spike_amplitude, AMPLITUDES)
        _check_choice("surrogate", self.surrogate, surrogate_names())
        if isinstance(self.time_steps, bool) or not isinstance(self.time_steps, int) or self.time_steps < 1:
            raise ValueError(f"SpikingBertConfig: time_steps must be a positive int, got {self.time_steps!r}")
        if not isinstance(self.tau, (int, float)) or not self.tau > 1:
            raise ValueError(f"SpikingBertConfig: tau must be a number > 1, got {self.tau!r}")
        if isinstance(self.v_threshold, bool) or not isinstance(self.v_threshold, (int, float)):
            raise ValueError(f"SpikingBertConfig: v_threshold must be a number, got {self.v_threshold!r}")
        ternary = self.ternary_spikes
        if isinstance(ternary, (list, tuple)):
            _check_sites("ternary_spikes", ternary)
        elif not isinstance(ternary, bool):
            raise ValueError(f"SpikingBertConfig: ternary_spikes must be a bool or a list of neuron sites "
                             f"({', '.join(NEURON_SITES)}), got {ternary!r}")
        self._check_site_thresholds()
        scale = self.attention_score_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                  or not 0 < scale < float("inf")):
            raise ValueError(f"SpikingBertConfig: attention_score_scale must be a positive number or None, got {scale!r}")
        if scale is not None and self.attention != "softmax":
            raise ValueError("SpikingBertConfig: attention_score_scale scales the softmax's scores; "
                             f"attention={self.attention!r} has no softmax (use attention='softmax')")
        if self.neuron == "lif" and (self.per_channel or self.learnable_threshold or self.ternary_spikes):
            raise ValueError(
                "SpikingBertConfig: per_channel, learnable_threshold and ternary_spikes are BPSN settings; "
                "SpikingJelly's LIFNode has one fixed threshold and binary spikes (use neuron='bpsn')"
            )

    def _check_site_thresholds(self) -> None:
        sites = self.site_thresholds
        if sites is None:
            return
        if not isinstance(sites, dict):
            raise ValueError(f"SpikingBertConfig: site_thresholds must be a dict {{site: threshold}} or None, "
                             f"got {sites!r}")
        _check_sites("site_thresholds", sites)
        for site, value in sites.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"SpikingBertConfig: site_thresholds[{site!r}] must be a positive number, "
                                 f"got {value!r}")

    def is_ternary(self, site: str) -> bool:
        """Whether the neuron at ``site`` (of :data:`NEURON_SITES`) fires -1 too."""
        return self.ternary_spikes is True or (not isinstance(self.ternary_spikes, bool)
                                               and site in self.ternary_spikes)

    def threshold_at(self, site: str) -> float:
        """The initial threshold of the neuron at ``site`` (of :data:`NEURON_SITES`)."""
        return (self.site_thresholds or {}).get(site, self.v_threshold)

    def make_surrogate(self) -> sj_surrogate.SurrogateFunctionBase:
        """A fresh instance of the configured SpikingJelly surrogate."""
        cls = getattr(sj_surrogate, self.surrogate)
        return cls() if self.surrogate_alpha is None else cls(alpha=self.surrogate_alpha)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "bert":
            # converting an ANN BERT is intended, not a type mismatch worth a warning
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        # from_pretrained(..., coding="repeat") passes its settings as kwargs, which
        # PretrainedConfig sets after __init__, skipping validation and the coding's default
        # neuron; fold them into the dict so __init__ sees them
        overrides = {key: kwargs.pop(key) for key in SPIKING_FIELDS if key in kwargs}
        if "coding" in overrides:
            overrides.setdefault("neuron", None)  # a new coding brings its own neuron unless one is named
        return super().from_dict({**config_dict, **overrides}, **kwargs)
