"""lora_switch on tiny torch modules, against the real PEFT 0.21 layers' own delta and merge."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from lora_server.lora_file import LoraFileError
from lora_server.lora_switch import LayerLora, LoraSwitch, LoraWeights, layer_kind

# PEFT warns when a second adapter is injected into the same model: wanted here.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")

LAYERS = ("linear", "point", "conv")


class Tiny(torch.nn.Module):
    """One layer of each kind a kohya LoRA targets: Linear, Conv2d 1x1 (SD 1.5's proj_in) and 3x3 (LoCon)."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(16, 12)
        self.point = torch.nn.Conv2d(8, 6, 1)
        self.conv = torch.nn.Conv2d(8, 6, 3, padding=1)
        self.to(dtype)


def peft_model(adapters: dict[str, int], dtype: torch.dtype = torch.float32) -> Tiny:
    """Tiny with one PEFT LoRA per name (its seed), random lora_B too (PEFT starts it at zero)."""
    model = Tiny(dtype)
    for name, seed in adapters.items():
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=2.0, target_modules=list(LAYERS), init_lora_weights=False)
        inject_adapter_in_model(config, model, adapter_name=name)
    model.to(dtype)
    return model


def weights_of(model: Tiny, adapter: str) -> LoraWeights:
    layers = {}
    for path in LAYERS:
        layer = model.get_submodule(path)
        assert isinstance(layer, LoraLayer)
        layers["m", path] = LayerLora(
            layer_kind(layer.get_base_layer(), "tiny", ("m", path)),
            layer.lora_A[adapter].weight.detach().clone(),
            layer.lora_B[adapter].weight.detach().clone(),
            float(layer.lora_alpha[adapter]),
            int(layer.r[adapter]),
        )
    return LoraWeights(layers)


def plain(dtype: torch.dtype = torch.float32) -> tuple[Tiny, LoraSwitch]:
    model = Tiny(dtype)
    return model, LoraSwitch(lambda _component, path: model.get_submodule(path))


def peft_merged(adapters: dict[str, float], dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """The base weights after PEFT merges `adapters` (name -> scale) in order, as diffusers' fuse_lora does."""
    model = peft_model({"a": 1, "b": 2}, dtype)
    for path in LAYERS:
        layer = model.get_submodule(path)
        for name, scale in adapters.items():
            layer.set_scale(name, scale)
        layer.merge(adapter_names=list(adapters))
    return [model.get_submodule(path).get_base_layer().weight.detach().clone() for path in LAYERS]


def current(model: Tiny) -> list[torch.Tensor]:
    return [model.get_submodule(path).weight.detach().clone() for path in LAYERS]


def test_the_delta_is_peft_get_delta_weight_bit_for_bit_for_linear_conv_1x1_and_kxk() -> None:
    model = peft_model({"a": 1})
    weights = weights_of(model, "a")
    assert [weights.layers["m", p].kind for p in LAYERS] == ["linear", "conv1x1", "conv"]
    for path in LAYERS:
        layer = model.get_submodule(path)
        layer.set_scale("a", 0.7)
        assert torch.equal(weights.layers["m", path].delta(0.7), layer.get_delta_weight("a"))


@pytest.mark.parametrize("adapters", [{"a": 1.0}, {"a": 0.8}, {"a": 0.8, "b": 1.3}])
def test_a_set_is_bit_identical_to_peft_merging_the_same_adapters_at_the_same_scales(adapters: dict[str, float]) -> None:
    source = peft_model({"a": 1, "b": 2})
    model, switch = plain()
    assert switch.apply([(name, weights_of(source, name), scale) for name, scale in adapters.items()])
    assert all(torch.equal(w, m) for w, m in zip(current(model), peft_merged(adapters), strict=True))


def test_two_loras_differ_from_each_alone_and_add_up() -> None:
    source = peft_model({"a": 1, "b": 2})
    a, b = weights_of(source, "a"), weights_of(source, "b")
    model, switch = plain()
    pristine = current(model)
    results = {}
    for name, loras in {"a": [("a", a, 1.0)], "b": [("b", b, 0.5)], "ab": [("a", a, 1.0), ("b", b, 0.5)]}.items():
        switch.apply(loras)
        results[name] = current(model)
    for i, path in enumerate(LAYERS):
        expected = pristine[i] + a.layers["m", path].delta(1.0) + b.layers["m", path].delta(0.5)
        assert torch.equal(results["ab"][i], expected)
        assert not torch.equal(results["ab"][i], results["a"][i]) and not torch.equal(results["ab"][i], results["b"][i])


def test_the_empty_set_restores_the_pristine_weights_exactly_in_fp16() -> None:
    source = peft_model({"a": 1, "b": 2}, torch.float16)
    model, switch = plain(torch.float16)
    pristine = current(model)
    switch.apply([("a", weights_of(source, "a"), 1.7), ("b", weights_of(source, "b"), 0.3)])
    assert not torch.equal(current(model)[0], pristine[0])
    switch.apply([])
    assert all(torch.equal(w, p) for w, p in zip(current(model), pristine, strict=True))
    assert switch.current == ()


def test_no_drift_in_fp16_after_many_switches_while_peft_merge_unmerge_drifts() -> None:
    source = peft_model({"a": 1, "b": 2}, torch.float16)
    a, b = weights_of(source, "a"), weights_of(source, "b")
    model, switch = plain(torch.float16)
    sets = [[("a", a, 1.0)], [("b", b, 0.6)], [("a", a, 1.0), ("b", b, 0.6)], [("a", a, 1.9)]]
    first = []
    for loras in sets:
        switch.apply(loras)
        first.append(current(model))
    for _ in range(50):
        for i, loras in enumerate(sets):
            switch.apply(loras)
            assert all(torch.equal(w, f) for w, f in zip(current(model), first[i], strict=True))
    # Negative control: PEFT's own merge/unmerge (what re-fusing does) rounds the fp16 weights each time.
    naive = peft_model({"a": 1, "b": 2}, torch.float16)
    for path in LAYERS:
        layer = naive.get_submodule(path)
        for _ in range(50):
            for name in ("a", "b"):
                layer.merge(adapter_names=[name])
                layer.unmerge()
    assert not all(torch.equal(naive.get_submodule(p).get_base_layer().weight, w) for p, w in zip(LAYERS, current(Tiny(torch.float16)), strict=True))


def test_negative_control_without_restoring_the_pristine_copy_a_set_depends_on_what_came_before() -> None:
    source = peft_model({"a": 1, "b": 2})
    a, b = weights_of(source, "a"), weights_of(source, "b")
    model, switch = plain()
    switch.apply([("a", a, 1.0)])
    alone = current(model)
    # What a switch without the copy would do: subtract the old delta, add the new one, in place.
    for path in LAYERS:
        weight = model.get_submodule(path).weight
        with torch.no_grad():
            weight += b.layers["m", path].delta(1.0)
            weight -= b.layers["m", path].delta(1.0)
    assert not all(torch.equal(w, x) for w, x in zip(current(model), alone, strict=True))


def test_the_same_set_and_scales_write_nothing_and_another_scale_rewrites() -> None:
    source = peft_model({"a": 1})
    a = weights_of(source, "a")
    model, switch = plain()
    assert switch.apply([("a", a, 1.0)])
    versions = [model.get_submodule(p).weight._version for p in LAYERS]
    assert not switch.apply([("a", a, 1.0)])
    assert [model.get_submodule(p).weight._version for p in LAYERS] == versions
    assert switch.apply([("a", a, 0.5)])
    assert switch.current == (("a", 0.5),)


def test_a_switch_that_fails_part_way_is_undone_by_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    source = peft_model({"a": 1, "b": 2})
    a, b = weights_of(source, "a"), weights_of(source, "b")
    model, switch = plain()
    pristine = current(model)
    switch.apply([("a", a, 1.0)])
    with_a = current(model)
    write = LoraSwitch._write
    writes: list[object] = []

    def second_write_fails(self: LoraSwitch, key: tuple[str, str], parts: object) -> None:
        writes.append(key)
        if len(writes) == 2:  # whatever the order of the layers: one written, then a failure
            raise RuntimeError("CUDA out of memory at the second layer")
        write(self, key, parts)  # type: ignore[arg-type]

    monkeypatch.setattr(LoraSwitch, "_write", second_write_fails)
    with pytest.raises(RuntimeError, match="second layer"):
        switch.apply([("b", b, 0.5)])
    monkeypatch.undo()
    assert switch.current is None
    assert sum(not torch.equal(w, x) for w, x in zip(current(model), with_a, strict=True)) == 1  # half-way: one layer is b's
    # Re-applying the earlier set must rewrite every layer (the set is unknown), not skip it as unchanged.
    assert switch.apply([("a", a, 1.0)])
    assert all(torch.equal(w, x) for w, x in zip(current(model), with_a, strict=True))
    switch.apply([])
    assert all(torch.equal(w, p) for w, p in zip(current(model), pristine, strict=True))


def test_pristine_copies_are_exact_size_pageable_and_logged_when_they_grow() -> None:
    a = weights_of(peft_model({"a": 1}), "a")
    model = Tiny()
    events: list[tuple[str, dict[str, object]]] = []
    switch = LoraSwitch(lambda _component, path: model.get_submodule(path), log=lambda event, **fields: events.append((event, fields)))
    sizes = {path: model.get_submodule(path).weight.numel() * 4 for path in LAYERS}
    switch.apply([("linear only", LoraWeights({("m", "linear"): a.layers["m", "linear"]}), 1.0)])
    assert events == [("pristine_copies", {"pristine_bytes": sizes["linear"], "layers": 1, "added_layers": 1})]
    switch.apply([("a", a, 1.0)])
    assert events[-1] == ("pristine_copies", {"pristine_bytes": sum(sizes.values()), "layers": 3, "added_layers": 2})
    switch.apply([])
    switch.apply([("a", a, 0.5)])
    assert len(events) == 2  # the control: no growth, no line
    # Exact-size, pageable copies (the pinned allocator would round each up to a power of two).
    assert not any(copy.is_pinned() for copy in switch._pristine.values())  # noqa: SLF001
    assert all(copy.untyped_storage().nbytes() == sizes[path] for (_, path), copy in switch._pristine.items())  # noqa: SLF001


def test_pristine_copies_are_made_once_per_layer_whatever_the_number_of_loras() -> None:
    source = peft_model({"a": 1, "b": 2})
    model, switch = plain()
    switch.apply([("a", weights_of(source, "a"), 1.0)])
    held = switch.pristine_bytes
    assert held == sum(p.numel() * 4 for p in current(model))
    for scale in (0.1, 0.2, 0.3):
        switch.apply([("b", weights_of(source, "b"), scale)])
    assert switch.pristine_bytes == held


def test_a_grouped_convolution_is_refused() -> None:
    with pytest.raises(LoraFileError, match=r"x\.safetensors: a LoRA module targets unet\.g, a Conv2d: only Linear and ungrouped Conv2d"):
        layer_kind(torch.nn.Conv2d(4, 4, 3, groups=2), "x.safetensors", ("unet", "g"))
