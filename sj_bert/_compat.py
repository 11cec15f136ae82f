"""Where transformers 4.57 and 5.x truly differ, in one place.

Everything else in sj-bert is written once, the transformers 5 way, and runs unchanged on
4.57: ``dtype=`` (not ``torch_dtype``), ``config.return_dict``, ``self.loss_function``,
fine-tuning metadata set on the loaded config rather than passed through ``from_pretrained``.

Weight initialisation is the one real difference. transformers 5 builds a model on the meta
device and then calls ``_init_weights`` on every module whose tensors were not *all* loaded;
tensors that were loaded carry ``_is_hf_initialized``, and only the functions of
``transformers.initialization`` skip them. Non-persistent buffers (BERT's ``position_ids``)
are never in a checkpoint, so ``_init_weights`` must fill them or they hold garbage.
transformers 4.x skips whole modules that were loaded and has no ``initialization`` module;
torch's in-place init functions do the same job there.
"""

from __future__ import annotations

import torch

__all__ = ["init"]

try:  # transformers >= 5
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    import types

    @torch.no_grad()
    def _copy_(tensor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return tensor.copy_(other)

    init = types.SimpleNamespace(
        normal_=torch.nn.init.normal_,
        zeros_=torch.nn.init.zeros_,
        ones_=torch.nn.init.ones_,
        constant_=torch.nn.init.constant_,
        copy_=_copy_,
    )
