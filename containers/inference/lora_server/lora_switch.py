"""Applies a set of LoRAs to a model's weights, each at its own scale, and switches sets without drift.

Each LoRA is held as plain tensors (`LoraWeights`: per layer, PEFT's lora_A and lora_B weights and
its alpha and rank), not as PEFT layers, so adapters come and go without any module being added to
the model (PEFT layers loaded and unloaded again and again are a known source of memory creep).

`LoraSwitch` keeps a host copy of each layer's weight as it was before any LoRA touched it (the
pristine weight), saved the first time a LoRA touches the layer. Applying a set rewrites every layer
the previous set or the new one touches as pristine + the sum, over the new set's LoRAs, of
scale × alpha / rank × (lora_B @ lora_A), summed in float32 and rounded once to the weight's dtype.
So the weights of a set are the same whatever came before: nothing accumulates, nothing drifts, and
the empty set is exactly the pristine model. The delta is PEFT 0.21's `get_delta_weight` for Linear
and Conv2d (1×1 and k×k), computed in float32 as PEFT does on the CPU; on the CPU in float32 the
weights are bit-identical to diffusers' `fuse_lora` of the same adapters at the same scales.

The pristine copies are ordinary (pageable) host tensors of exactly their size, made lazily. They are
not page-locked: torch's pinned host allocator rounds each allocation up to a power of two, so SDXL's
~5.8 GB of targeted layers would take ~7.8 GB of locked memory, more than the inference component
reserves for them. The price is that a restore is a host-to-GPU copy at pageable speed. Their total is
logged (`pristine_copies`, pristine_bytes) each time it grows, so operators see the real figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .lora_file import LoraFileError

LayerKind = Literal["linear", "conv1x1", "conv"]
# (pipeline component, module path inside it): one targeted layer.
LayerId = tuple[str, str]


@dataclass(frozen=True)
class LayerLora:
    """One layer's LoRA: PEFT's lora_A and lora_B weights, and its lora_alpha and r."""

    kind: LayerKind
    down: torch.Tensor  # lora_A.weight: [rank, in] (Linear) or [rank, in, k, k] (Conv2d)
    up: torch.Tensor  # lora_B.weight: [out, rank] (Linear) or [out, rank, 1, 1] (Conv2d)
    alpha: float
    rank: int

    def delta(self, scale: float) -> torch.Tensor:
        """scale × alpha / rank × the layer's low-rank product, in float32, as PEFT's get_delta_weight."""
        # The same expression as PEFT's set_scale (scale * lora_alpha / r), so the product rounds alike.
        scaling = scale * self.alpha / self.rank
        down, up = self.down.float(), self.up.float()
        if self.kind == "linear":
            return (up @ down) * scaling
        if self.kind == "conv1x1":
            return (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3) * scaling
        return F.conv2d(down.transpose(0, 1), up).transpose(0, 1) * scaling

    @property
    def nbytes(self) -> int:
        return _nbytes(self.down) + _nbytes(self.up)


@dataclass(frozen=True)
class LoraWeights:
    """A whole LoRA as plain tensors, keyed by the layer each part applies to."""

    layers: Mapping[LayerId, LayerLora]

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers.values())

    def to(self, device: torch.device | str) -> LoraWeights:
        """The same LoRA on `device` (the tensors themselves when they are already there)."""
        return LoraWeights(
            {
                key: LayerLora(layer.kind, layer.down.to(device), layer.up.to(device), layer.alpha, layer.rank)
                for key, layer in self.layers.items()
            }
        )


def layer_kind(module: torch.nn.Module, file_name: str, key: LayerId) -> LayerKind:
    """The kind of delta a base layer takes; any other layer (grouped convolutions, embeddings...) is refused."""
    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, torch.nn.Conv2d) and module.groups == 1:
        return "conv1x1" if tuple(module.weight.shape[2:4]) == (1, 1) else "conv"
    raise LoraFileError(
        f"{file_name}: a LoRA module targets {key[0]}.{key[1]}, a {type(module).__name__}: "
        "only Linear and ungrouped Conv2d layers are supported"
    )


# What a set is: each LoRA's key and scale, in order (the order fixes the float32 summation).
AppliedSet = tuple[tuple[str, float], ...]


class LoraSwitch:
    """Holds which LoRAs the model's weights carry, and moves them to another set; the caller serializes calls.

    `layer(component, path)` returns the model's module for a layer id; `log` (if given) is told the
    pristine copies' total each time it grows.
    """

    def __init__(self, layer: Callable[[str, str], torch.nn.Module], log: Callable[..., None] | None = None) -> None:
        self._layer = layer
        self._log = log
        self._pristine: dict[LayerId, torch.Tensor] = {}
        # Layers whose weights may differ from their pristine copy; every other layer is pristine.
        self._touched: set[LayerId] = set()
        # The set the weights carry; None when unknown (a switch failed part-way): the next one rewrites all.
        self._current: AppliedSet | None = ()

    @property
    def current(self) -> AppliedSet | None:
        return self._current

    @property
    def pristine_bytes(self) -> int:
        """Host memory held by the pristine copies: bounded by the targeted layers, whatever the LoRAs."""
        return sum(_nbytes(t) for t in self._pristine.values())

    def apply(self, loras: Sequence[tuple[str, LoraWeights, float]]) -> bool:
        """Makes the weights pristine + the deltas of `loras` (key, weights, scale); False when they already are."""
        wanted: AppliedSet = tuple((key, scale) for key, _, scale in loras)
        if wanted == self._current:
            return False
        targets = _per_layer(loras)
        saved = sum(self._save_pristine(key) for key in targets)
        if saved and self._log is not None:
            self._log("pristine_copies", pristine_bytes=self.pristine_bytes, layers=len(self._pristine), added_layers=saved)
        self._current = None
        rewrite = self._touched | set(targets)
        # From here until the end, every layer in `rewrite` may be half-way: all stay "touched".
        self._touched = rewrite
        for key in rewrite:
            self._write(key, targets.get(key, ()))
        self._touched = set(targets)
        self._current = wanted
        return True

    def _save_pristine(self, key: LayerId) -> bool:
        """Keeps the layer's weight as its pristine copy (exact size, pageable); False if it already has one."""
        # A layer never saved was never touched: its weight is the pristine one.
        if key in self._pristine:
            return False
        self._pristine[key] = self._layer(*key).weight.detach().to("cpu", copy=True)
        return True

    def _write(self, key: LayerId, parts: Iterable[tuple[LayerLora, float]]) -> None:
        weight = self._layer(*key).weight
        total = self._pristine[key].to(weight.device, dtype=torch.float32, copy=True)
        for part, scale in parts:
            total += part.delta(scale)
        with torch.no_grad():
            weight.copy_(total)  # one rounding to the weight's dtype


def _per_layer(loras: Sequence[tuple[str, LoraWeights, float]]) -> dict[LayerId, list[tuple[LayerLora, float]]]:
    targets: dict[LayerId, list[tuple[LayerLora, float]]] = {}
    for _, weights, scale in loras:
        for key, part in weights.layers.items():
            targets.setdefault(key, []).append((part, scale))
    return targets


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
