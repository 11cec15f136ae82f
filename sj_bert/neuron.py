"""BPSN: the Bidirectional Parallel Spiking Neuron as a SpikingJelly 2.x node."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
from spikingjelly.activation_based import surrogate
from spikingjelly.activation_based.neuron import BaseNode

from .ops.bpsn.chunk import DecayTables
from .ops.bpsn.cpu import ScanWeights
from .ops.bpsn._host import param_table
from .ops.bpsn.dispatch import (
    FUSED_BACKENDS, AMPLITUDES, bpsn_multistep, requested_backend, scale_by_threshold, select_backend,
)
from .ops.bpsn.reference import DIRECTIONS, compute_dtype, spikes_from_potential

__all__ = ["BPSN", "BPSN_CLASS_PATH", "register_with_spikingjelly"]


def _logit_from_tau(tau: float, name: str) -> float:
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 1.0):
        raise ValueError(f"{name} must be a finite number > 1 (decay = 1 - 1/{name}), got {tau!r}")
    # lam = 1 - 1/tau, so logit(lam) = log(lam / (1 - lam)) = log(tau - 1)
    return math.log(tau - 1.0)


class BPSN(BaseNode):
    r"""Bidirectional Parallel Spiking Neuron (SNN-BERT, Neural Networks 180, 2024).

    Input ``x``: ``[T, N, *]`` (multi-step, time first; in SNN-BERT ``T`` is the token
    position). Optional ``mask``: ``[T, N]``, bool or integer, true at real steps. With
    ``m[t] = mask[t]`` (all ones without a mask):

    .. math::

        h_f[t] &= \lambda_f h_f[t-1] + m[t] x[t], \qquad h_f[-1] = 0 \\
        h_b[t] &= \lambda_b h_b[t+1] + m[t] x[t], \qquad h_b[T] = 0 \\
        v[t]   &= \alpha h_f[t] + (1 - \alpha) h_b[t] \\
        s[t]   &= m[t]\, \Theta(v[t] - V_{th})

    with :math:`\lambda_f = \sigma(a_f)`, :math:`\lambda_b = \sigma(a_b)`,
    :math:`\alpha = \sigma(a_m)`, all learnable and strictly inside (0, 1), and
    :math:`\Theta` the Heaviside step whose gradient is ``surrogate_function``'s. With
    ``ternary=True`` a neuron also fires -1 where :math:`v[t] \le -V_{th}`
    (:math:`s = \Theta(v - V_{th}) - \Theta(-v - V_{th})`, SpikingJelly's ternary neurons'
    rule): the next layer subtracts its weight instead of adding it, still an accumulate.
    ``direction="forward"`` uses :math:`v = h_f`, ``"backward"`` uses :math:`v = h_b`.

    There is no reset, so every :math:`v[t]` depends on the inputs alone and all steps are
    computed at once (no Python loop over T). Since :math:`\lambda < 1`,
    :math:`|v| \le \max|x| / (1 - \lambda)` and the potential decays geometrically once the
    input stops: the neuron cannot fire forever. Padded steps are zeroed before integration
    and silenced after firing, so each sample spikes exactly as it would alone.

    :param tau: time constant of the forward decay, ``lam_f = 1 - 1/tau`` (> 1)
    :param tau_backward: time constant of the backward decay (default: ``tau``)
    :param v_threshold: firing threshold ``V_th``
    :param surrogate_function: any SpikingJelly surrogate; the fused kernels support
        :data:`sj_bert.ops.bpsn._spikingjelly.FUSED_SURROGATES`, others run on the torch
        path (one warning)
    :param direction: ``"bi"`` (default), ``"forward"`` (causal, streams in single-step
        mode) or ``"backward"``
    :param channels: ``None`` for scalar decays/fusion/threshold, or ``C`` for one per
        channel: dimension ``channel_dim`` of ``x_seq``
    :param channel_dim: where the channels are in the multi-step input, ``2`` by default:
        SpikingJelly's and PyTorch's layout, ``[T, N, C]`` after a linear layer and
        ``[T, N, C, H, W]`` (or ``[T, N, C, L]``) after a conv layer, i.e. dimension 1 of
        each step's ``[N, C, *]``. Use ``-1`` for channels-last features such as
        ``[T, N, L, C]``. Only used with ``channels``
    :param learnable_threshold: make ``v_threshold`` a parameter
    :param backend: ``None`` (device default, or ``SJ_BPSN_IMPLEMENTATION``),
        ``"cpu"`` (compiled scans, the CPU default where a C++ compiler is found),
        ``"torch"`` (chunked, linear in T), ``"reference"`` (the ``[T, T]`` matrix form),
        ``"triton"`` or ``"cupy"``
    :param v_reset: accepted for drop-in use in SpikingJelly models; BPSN has no reset, so
        it must be ``None`` or ``0.0`` and is ignored
    :param detach_reset: accepted for drop-in use; ignored (no reset)
    :param step_mode: ``"m"`` (default) or ``"s"`` (``direction="forward"`` only)
    :param store_v_seq: keep ``v`` for every step in ``self.v_seq``
    :param store_v_last: after a multi-step call keep the last step's potential in
        ``self.v`` (SpikingJelly's convention, default). ``False`` leaves ``self.v`` as it
        was and saves a copy per call: for nets that never read it (SNN-BERT)
    :param ternary: spikes in {-1, 0, 1} (see above); ``False``: binary spikes
    :param spike_amplitude: ``"unit"`` (default): a spike is 1 (-1); ``"threshold"``: a
        spike of channel ``c`` carries ``V_th[c]`` (``-V_th[c]``), a fixed per-channel
        scale the next weight matrix absorbs (``W diag(V_th) s``), so it still costs
        accumulates only; gradients reach the threshold through it too. The fused kernels
        write the scaled spikes themselves in inference

    Example::

        >>> node = BPSN(tau=2.0, channels=8)
        >>> x = torch.randn(5, 3, 8)            # [T, N, C]
        >>> mask = torch.ones(5, 3, dtype=torch.bool)
        >>> node(x, mask=mask).shape
        torch.Size([5, 3, 8])
        >>> conv_node = BPSN(channels=8)        # after a conv layer: channels are dim 2
        >>> conv_node(torch.randn(5, 3, 8, 4, 4)).shape   # [T, N, C, H, W]
        torch.Size([5, 3, 8, 4, 4])
    """

    def __init__(
        self,
        tau: float = 2.0,
        tau_backward: Optional[float] = None,
        v_threshold: float = 1.0,
        surrogate_function: surrogate.SurrogateFunctionBase = surrogate.ATan(),
        direction: str = "bi",
        channels: Optional[int] = None,
        learnable_threshold: bool = False,
        backend: Optional[str] = None,
        v_reset: Optional[float] = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        store_v_seq: bool = False,
        channel_dim: int = 2,
        ternary: bool = False,
        spike_amplitude: str = "unit",
        store_v_last: bool = True,
    ):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if v_reset not in (None, 0.0):
            raise ValueError(f"BPSN has no reset; v_reset must be None or 0.0, got {v_reset!r}")
        if channels is not None and (not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels must be a positive int or None, got {channels!r}")
        if not isinstance(channel_dim, int) or isinstance(channel_dim, bool) or channel_dim in (0, 1):
            raise ValueError(
                "channel_dim must be an int naming a feature dimension of [T, N, *] "
                f"(2 or more, or negative such as -1), got {channel_dim!r}"
            )
        if not isinstance(ternary, bool):
            raise TypeError(f"ternary must be a bool, got {type(ternary).__name__}")
        if spike_amplitude not in AMPLITUDES:
            raise ValueError(f"spike_amplitude must be one of {AMPLITUDES}, got {spike_amplitude!r}")
        if not isinstance(store_v_last, bool):
            raise TypeError(f"store_v_last must be a bool, got {type(store_v_last).__name__}")
        if isinstance(v_threshold, bool) or not isinstance(v_threshold, (int, float)) or not math.isfinite(v_threshold):
            raise ValueError(f"v_threshold must be a finite number, got {v_threshold!r}")
        if not callable(surrogate_function):
            raise TypeError(
                "surrogate_function must be a SpikingJelly surrogate (e.g. surrogate.ATan()), "
                f"got {type(surrogate_function).__name__}"
            )
        self.direction = direction  # read by the step_mode setter inside BaseNode.__init__
        super().__init__(float(v_threshold), None, surrogate_function, detach_reset, step_mode, store_v_seq)
        self.channels = channels
        self.channel_dim = channel_dim
        self.ternary = bool(ternary)
        self.spike_amplitude = spike_amplitude
        self.store_v_last = store_v_last
        self.backend = backend
        if backend is not None:
            requested_backend(backend)  # fail at construction on a typo
        self.implementation: Optional[str] = None
        self._parameter_cache: Optional[tuple] = None  # see _derived_from_parameters
        self.tau = tau
        self.tau_backward = tau if tau_backward is None else tau_backward
        self.initial_threshold = float(v_threshold)
        size = channels or 1
        if direction in ("bi", "forward"):
            self.a_f = nn.Parameter(torch.empty(size))
        if direction in ("bi", "backward"):
            self.a_b = nn.Parameter(torch.empty(size))
        if direction == "bi":
            self.a_m = nn.Parameter(torch.empty(size))
        del self.v_threshold  # BaseNode stores a float; BPSN keeps a tensor (per channel if asked)
        if learnable_threshold:
            self.v_threshold = nn.Parameter(torch.empty(size))
        else:
            self.register_buffer("v_threshold", torch.empty(size))
        self.reset_parameters()

    def initial_values(self) -> dict[str, float]:
        """Each parameter's (and the threshold buffer's) initial value, by attribute name:
        ``lam = 1 - 1/tau`` (logit ``log(tau - 1)``), ``alpha = 0.5`` (logit 0), threshold
        ``v_threshold``. Model code that builds weights lazily (``from_pretrained``) fills
        each tensor from this, skipping the ones a checkpoint loaded."""
        values = {"v_threshold": self.initial_threshold}
        if hasattr(self, "a_f"):
            values["a_f"] = _logit_from_tau(self.tau, "tau")
        if hasattr(self, "a_b"):
            values["a_b"] = _logit_from_tau(self.tau_backward, "tau_backward")
        if hasattr(self, "a_m"):
            values["a_m"] = 0.0
        return values

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Set every parameter and the threshold to :meth:`initial_values`."""
        for name, value in self.initial_values().items():
            getattr(self, name).fill_(value)

    # -- step mode: only the causal neuron can run one step at a time ---------------------
    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' or 'm', got {value!r}")
        if value == "s" and self.direction != "forward":
            raise ValueError(
                f"BPSN(direction={self.direction!r}) needs the whole sequence (its potential "
                "integrates future steps), so it runs in multi-step mode only; use "
                "direction='forward' for single-step streaming"
            )
        self._step_mode = value

    def supported_step_mode(self):
        return ("s", "m") if self.direction == "forward" else ("m",)

    # -- parameters in (0, 1) ----------------------------------------------------------------
    def decays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lam_f, lam_b, alpha)``, each ``[1]`` or ``[C]``; unused ones are constants."""
        ref = self.v_threshold

        def constant(value: float) -> torch.Tensor:  # built only for the directions that need it
            return torch.full((1,), value, dtype=ref.dtype, device=ref.device)

        lam_f = torch.sigmoid(self.a_f) if hasattr(self, "a_f") else constant(0.5)
        lam_b = torch.sigmoid(self.a_b) if hasattr(self, "a_b") else constant(0.5)
        alpha = torch.sigmoid(self.a_m) if hasattr(self, "a_m") else constant(1.0 if self.direction == "forward" else 0.0)
        return lam_f, lam_b, alpha

    def extra_repr(self) -> str:
        return (
            f"direction={self.direction}, channels={self.channels}, "
            + (f"channel_dim={self.channel_dim}, " if self.channels is not None and self.channel_dim != 2 else "")
            + f"step_mode={self.step_mode}, "
            f"backend={self.backend or 'auto'}, learnable_threshold={isinstance(self.v_threshold, nn.Parameter)}, "
            f"surrogate={type(self.surrogate_function).__name__}"
            + (", ternary=True" if self.ternary else "")
            + (f", spike_amplitude={self.spike_amplitude}" if self.spike_amplitude != "unit" else "")
            + ("" if self.store_v_last else ", store_v_last=False")
        )

    # -- input checks ------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor, mask: Optional[torch.Tensor], multi_step: bool) -> None:
        name = "x_seq" if multi_step else "x"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"BPSN: {name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
        min_rank = 2 if multi_step else 1
        layout = "[T, N, *]" if multi_step else "[N, *]"
        if x.dim() < min_rank:
            raise ValueError(f"BPSN: {name} must have shape {layout}, got a {x.dim()}-d tensor of shape {tuple(x.shape)}")
        if multi_step and x.shape[0] == 0:
            raise ValueError(f"BPSN: {name} has T=0 time steps; expected at least one")
        if self.channels is not None:
            dim = self._channel_axis(x.dim(), multi_step)
            if dim is None or x.shape[dim] != self.channels:
                raise ValueError(
                    f"BPSN(channels={self.channels}, channel_dim={self.channel_dim}): {name} must have "
                    f"{self.channels} channels at dimension {self.channel_dim} of the multi-step layout "
                    "[T, N, C, *] ([T, N, C]: the last dimension; [T, N, C, H, W] after a conv layer); "
                    f"pass channel_dim=-1 for channels-last inputs; got shape {tuple(x.shape)}"
                )
        if mask is None:
            return
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"BPSN: mask must be a tensor, got {type(mask).__name__}")
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise TypeError(
                f"BPSN: mask must be bool or integer (1 at real steps), got {mask.dtype}; "
                "a floating mask would scale the input instead of selecting steps"
            )
        expected = tuple(x.shape[:2]) if multi_step else tuple(x.shape[:1])
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"BPSN: mask must have shape {list(expected)} ({'[T, N]' if multi_step else '[N]'} of {name}), "
                f"got {list(mask.shape)}"
            )
        if mask.device != x.device:
            raise ValueError(f"BPSN: mask is on {mask.device} but {name} is on {x.device}")

    def _channel_axis(self, rank: int, multi_step: bool) -> Optional[int]:
        """Index of the channel dimension in an input of ``rank`` dims (``None`` if out of
        range). Single-step inputs ``[N, C, *]`` lack the time dimension."""
        dim = self.channel_dim
        if dim >= 0 and not multi_step:
            dim -= 1
        dim = dim if dim >= 0 else rank + dim
        batch_dims = 2 if multi_step else 1  # [T, N] or [N]: never channels
        return dim if batch_dims <= dim < rank else None

    def _per_channel(self, p: torch.Tensor, x: torch.Tensor, multi_step: bool) -> torch.Tensor:
        """``p`` (``[1]`` or ``[C]``) shaped to broadcast over ``x`` along its channel dimension."""
        if p.numel() == 1:
            return p.reshape(())
        dim = self._channel_axis(x.dim(), multi_step)
        return p.reshape((-1,) + (1,) * (x.dim() - 1 - dim))

    def resolve_implementation(self, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
        """The implementation this node runs on ``device`` (one of ``dispatch.BACKENDS``)."""
        return select_backend(device, self.backend, self.surrogate_function, dtype)

    def _table_tensors(self) -> tuple[torch.Tensor, ...]:
        """``a_f``, ``a_b``, ``a_m`` (those the direction has) and the threshold (the fused
        kernels' table holds it): what :meth:`_derived_from_parameters` depends on. Read from
        the module's own dicts: every ``hasattr``/``getattr`` passes SpikingJelly's and
        torch's ``__getattr__``, a microsecond or so each, on every call of every neuron."""
        parameters, buffers = self._parameters, self._buffers
        found = []
        for name in ("a_f", "a_b", "a_m", "v_threshold"):
            tensor = parameters.get(name)
            if tensor is None:
                tensor = buffers.get(name)
            if tensor is not None:
                found.append(tensor)
        return tuple(found)

    def _derived_from_parameters(self, device: torch.device, dtype: torch.dtype, implementation: str):
        """``(lam_f, lam_b, alpha, tables)`` in ``dtype`` on ``device``; ``tables`` is the
        torch path's :class:`DecayTables`, the cpu path's :class:`ScanWeights`, the fused
        kernels' fp32 ``[4, P]`` parameter table (threshold included), ``None`` for the
        reference.

        They depend on the parameters alone, so they are kept between calls and rebuilt only
        when a parameter changes (an in-place update bumps its ``_version``; ``.to()``,
        ``load_state_dict`` and optimizers all do) or device, dtype or implementation do.
        While autograd must reach the parameters they are rebuilt in the graph every call:
        a cached graph would be freed by the first backward (and training changes the
        parameters every step anyway)."""
        params = self._table_tensors()

        def build(cached: bool):
            lam_f, lam_b, alpha = (p.to(device, dtype) for p in self.decays())
            if implementation == "torch":
                tables = DecayTables(lam_f, lam_b, alpha, self.direction)
            elif implementation == "cpu":
                tables = ScanWeights.build(lam_f, lam_b, alpha, self.direction)
            elif implementation in FUSED_BACKENDS and cached:  # with autograd the kernels' op builds it
                table_params = (lam_f, lam_b, alpha, self.v_threshold.to(device))
                tables = param_table(table_params, max(p.numel() for p in table_params))
            else:
                tables = None
            return lam_f, lam_b, alpha, tables

        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            # a compiled graph folds these few ops into its own kernels; the cache's identity
            # and version checks would only break the graph
            return build(cached=False)
        # the cache holds the parameters themselves, so a replaced one is never mistaken for
        # a freed one whose memory was reused
        key = (device, dtype, implementation, self.direction, tuple((p._version, p.data_ptr()) for p in params))
        cached = self._parameter_cache
        if cached is None or cached[1] != key or any(a is not b for a, b in zip(cached[0], params)):
            # built outside any inference_mode, so that later calls with autograd may use it
            with torch.inference_mode(False), torch.no_grad():
                cached = self._parameter_cache = (params, key, build(cached=True))
        return cached[2]

    # -- multi-step: all steps at once -------------------------------------------------------
    def multi_step_functional_forward(self, inputs, states, **kwargs):
        x = inputs[0]
        mask = inputs[1] if len(inputs) > 1 else kwargs.get("mask")
        self._check_input(x, mask, multi_step=True)
        mask = mask if mask is None or mask.dtype == torch.bool else mask != 0
        implementation = self.resolve_implementation(x.device, x.dtype)
        # nn.Module.__setattr__ only on a change, in eager mode; a traced call always assigns, so
        # that its graph is not guarded on the value a first call finds (None)
        if torch.compiler.is_compiling() or implementation != self.implementation:
            self.implementation = implementation
        dtype = compute_dtype(x.dtype) if self.implementation in ("torch", "cpu") else self.v_threshold.dtype
        lam_f, lam_b, alpha, tables = self._derived_from_parameters(x.device, dtype, self.implementation)
        # every backend keeps per-channel parameters on the last dimension (a kernel column
        # n belongs to channel n % C), so channels elsewhere, e.g. [T, N, C, H, W] after a
        # conv layer, move there and back around the one dispatched call
        dim = self._channel_axis(x.dim(), multi_step=True) if self.channels is not None else None
        moved = dim is not None and dim != x.dim() - 1
        spike, v = bpsn_multistep(
            x.movedim(dim, -1) if moved else x, mask, lam_f, lam_b, alpha, self.v_threshold,
            self.surrogate_function, self.direction, self.implementation, tables, self.ternary,
            self.spike_amplitude == "threshold",
        )
        if moved:
            spike, v = spike.movedim(-1, dim), v.movedim(-1, dim)
        if not self.store_v_last:
            return (spike, v), states
        # each multi-step call is a whole sequence (h[-1] = 0), so the carried state is for
        # inspection and for streaming on in single-step mode: no graph is kept alive by it
        # (a copy: a view of the last step would keep the whole [T, N, *] potential alive)
        return (spike, v), (v[-1].detach().to(x.dtype, copy=True), *states[1:])

    def multi_step_forward(self, x_seq: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """``x_seq``: ``[T, N, *]``, ``mask``: ``[T, N]`` or ``None`` -> spikes ``[T, N, *]``."""
        (spike, v), (v_last, *_) = self.multi_step_functional_forward((x_seq, mask), (self.v,))
        if self.store_v_last:  # else v_last is self.v: no second pass through __setattr__
            self.v = v_last
        if self.store_v_seq:
            self.v_seq = v
        return spike

    # -- single step: causal streaming (direction="forward") ---------------------------------
    def single_step_functional_forward(self, inputs, states, **kwargs):
        x = inputs[0]
        mask = inputs[1] if len(inputs) > 1 else kwargs.get("mask")
        if self.direction != "forward":
            raise ValueError(f"BPSN(direction={self.direction!r}) cannot run one step at a time")
        self._check_input(x, mask, multi_step=False)
        mask = None if mask is None else mask != 0
        v = states[0]
        u = x if mask is None else x * mask.to(x.dtype).reshape(mask.shape + (1,) * (x.dim() - 1))
        lam_f, _, _ = self.decays()
        v = self._per_channel(lam_f, x, False).to(x.dtype) * v + u
        spike = spikes_from_potential(v, None, self._per_channel(self.v_threshold, x, False), self.surrogate_function,
                                      self.ternary)
        if mask is not None:
            spike = spike * mask.to(x.dtype).reshape(mask.shape + (1,) * (x.dim() - 1))
        if self.spike_amplitude == "threshold":
            spike = scale_by_threshold(spike, self._per_channel(self.v_threshold, x, False))
        return (spike,), (v, *states[1:])

    def single_step_forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """``x``: ``[N, *]``, ``mask``: ``[N]`` or ``None`` -> spikes ``[N, *]``; state in ``self.v``."""
        if self.direction != "forward":
            raise ValueError(
                f"BPSN(direction={self.direction!r}) cannot run one step at a time; "
                "only direction='forward' supports single-step streaming"
            )
        inputs = (x,) if mask is None else (x, mask)
        return super().single_step_forward(*inputs)


#: BPSN's name in SpikingJelly's serialized configs: ``NeuronConfig(class_path=BPSN_CLASS_PATH)``.
BPSN_CLASS_PATH = f"{BPSN.__module__}.{BPSN.__qualname__}"


def register_with_spikingjelly() -> str:
    """Register BPSN in SpikingJelly 2.x's neuron registry and return its class path.

    SpikingJelly's serialized model configs (``NeuronConfig(class_path=..., kwargs=...)`` in
    ``SpikformerConfig``, ``SEWResNet34Config`` and its distributed training) resolve
    external neurons only through ``register_neuron_class``, never by importing a path read
    from a file. ``import sj_bert`` calls this; every process that decodes such a config
    (each rank of a distributed run, an inference server) must import sj_bert first.

    Example::

        >>> from spikingjelly.activation_based.distributed.vision.config import NeuronConfig
        >>> NeuronConfig(class_path=register_with_spikingjelly(), kwargs={"tau": 2.0}).class_path
        'sj_bert.neuron.BPSN'
    """
    from spikingjelly.activation_based.distributed.vision.config import register_neuron_class

    register_neuron_class(BPSN)
    return BPSN_CLASS_PATH
