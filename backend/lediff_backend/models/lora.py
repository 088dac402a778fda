"""Low-rank adapters (LoRA) on ``nn.Linear`` and ``nn.Conv2d`` layers, named as PEFT names them.

GMODiff's released weights were trained with PEFT 0.9 (through diffusers' ``add_adapter``): a
wrapped layer ``<name>`` keeps its weights as ``<name>.base_layer.weight`` and each adapter
``<a>`` adds ``<name>.lora_A.<a>.weight`` (rank x input: a Linear, or a Conv2d with the base
layer's kernel, stride and padding) and ``<name>.lora_B.<a>.weight`` (output x rank: a Linear
or 1x1 Conv2d), scaled by ``alpha / rank``. ``LoraLayer`` reproduces that module tree, so such
state dicts load into it unchanged; ``merge_lora`` folds the adapters into plain layers for
inference. This is PEFT's forward (dropout 0, the default), not a copy of its code.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PEFT_DEFAULT_ALPHA", "LoraLayer", "add_lora", "merge_lora"]

# PEFT's ``LoraConfig.lora_alpha`` default; GMODiff never sets it, so its scale is 8 / rank.
PEFT_DEFAULT_ALPHA = 8.0


class LoraLayer(nn.Module):
    """A Linear or Conv2d ``base_layer`` plus named low-rank adapters, all of them active."""

    def __init__(self, base_layer: nn.Linear | nn.Conv2d):
        super().__init__()
        if not isinstance(base_layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"LoRA wraps Linear and Conv2d layers, not {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.scaling: dict[str, float] = {}

    def add_adapter(self, name: str, rank: int, alpha: float = PEFT_DEFAULT_ALPHA) -> None:
        """A new adapter: A ~ N(0, 1/rank) (PEFT's "gaussian" init), B = 0, so it starts as a no-op."""
        base = self.base_layer
        if isinstance(base, nn.Linear):
            down, up = nn.Linear(base.in_features, rank, bias=False), nn.Linear(rank, base.out_features, bias=False)
        else:
            down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        down.to(base.weight.device, base.weight.dtype)
        up.to(base.weight.device, base.weight.dtype)
        nn.init.normal_(down.weight, std=1.0 / rank)
        nn.init.zeros_(up.weight)
        self.lora_A[name], self.lora_B[name] = down, up
        self.scaling[name] = alpha / rank

    def delta_weight(self, name: str) -> torch.Tensor:
        """The adapter's change to the base weight: ``scaling · B @ A`` in the base weight's shape."""
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        if isinstance(self.base_layer, nn.Linear):
            delta = b @ a
        else:  # B is 1x1: out x rank; A is rank x in x kh x kw
            delta = torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)
        return delta * self.scaling[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        for name, down in self.lora_A.items():
            out = out + self.lora_B[name](down(x)) * self.scaling[name]
        return out


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def add_lora(model: nn.Module, names: list[str], adapter: str, rank: int,
             alpha: float = PEFT_DEFAULT_ALPHA) -> None:
    """Give each module of ``model`` named in ``names`` (full dotted names) the adapter ``adapter``.

    Raises KeyError naming a module that does not exist, TypeError for one that is not a
    Linear or Conv2d (or a LoraLayer around one).
    """
    for name in dict.fromkeys(names):  # GMODiff's lists repeat names; the order stays
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise KeyError(name) from None
        if not isinstance(layer, LoraLayer):
            parent, child = _parent(model, name)
            layer = LoraLayer(layer)
            setattr(parent, child, layer)
        layer.add_adapter(adapter, rank, alpha)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and put the plain layers back; returns ``model``."""
    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in wrapped:
        base = layer.base_layer
        for adapter in layer.lora_A:
            base.weight += layer.delta_weight(adapter).to(base.weight.dtype)
        parent, child = _parent(model, name)
        setattr(parent, child, base)
    return model
