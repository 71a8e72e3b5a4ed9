"""The real DiffusersPipeline logic (LoRA scale, deadline, seeds, schedulers) against a stand-in for diffusers.

`FakeDiffusersPipe` models what this code relies on in diffusers 0.40 with PEFT 0.21:
- `set_adapters(names, adapter_weights=[w])` sets each LoRA layer's scale to w (PEFT `set_scale`);
- `fuse_lora(lora_scale=s)` multiplies that scale by s (PEFT `scale_layer`) and merges it into the weight;
- `unfuse_lora()` subtracts what is merged at the layer's current scale (PEFT `unmerge`);
- `__call__` makes one U-Net call per timestep of its scheduler (`num_timesteps`) and runs the step
  callback after each (an exception the callback raises leaves the call at once, decode included);
  like the SDXL pipeline, it upcasts an fp16 VAE to fp32 for the decode and casts it back only after a
  decode that succeeds, and a decode of fp16 latents by an fp32 VAE fails on the dtype mismatch;
- with `queued=True` it times work as CUDA does: steps are queued, and run (move the clock) only at
  `synchronize()` or at the end of the call, when diffusers copies the images to the CPU.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from lora_server.diffusers_pipeline import ADAPTER, DiffusersPipeline
from lora_server.logs import JsonLog
from lora_server.service import GenerationTimeout, NotEnoughTime
from lora_server.validation import GenerationParams

def f16(x: float) -> float:
    """x rounded to IEEE half precision, as an fp16 tensor on the GPU stores it."""
    return struct.unpack("<e", struct.pack("<e", x))[0]


class FakeTensor:
    """An fp16 tensor: every value written is rounded to half precision."""

    def __init__(self, values: list[float]) -> None:
        self.values = [f16(v) for v in values]

    @property
    def data(self) -> FakeTensor:
        return self

    def detach(self) -> FakeTensor:
        return self

    def to(self, device: str, copy: bool = False) -> FakeTensor:
        assert (device, copy) == ("cpu", True)
        return FakeTensor(self.values)

    def copy_(self, other: FakeTensor) -> FakeTensor:
        self.values = list(other.values)
        return self

    def numel(self) -> int:
        return len(self.values)

    def element_size(self) -> int:
        return 2


class FakeLoraLayer:
    """A PEFT 0.21 LoRA layer (tuners/lora/layer.py): `scaling` set absolutely by set_scale, multiplied by
    scale_layer; merge adds `scaling * delta` to the fp16 weight unless merged; unmerge subtracts it."""

    def __init__(self, base: list[float], delta: list[float]) -> None:
        self.weight = FakeTensor(base)
        self.delta = [f16(d) for d in delta]
        self.scaling = 1.0
        self.merged = False

    def _shift(self, sign: int) -> None:
        self.weight.values = [f16(w + sign * f16(self.scaling * d)) for w, d in zip(self.weight.values, self.delta, strict=True)]

    def merge(self) -> None:
        if not self.merged:
            self._shift(+1)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self._shift(-1)
            self.merged = False


def make_layers() -> list[FakeLoraLayer]:
    # Base weights of a few magnitudes, LoRA deltas much smaller: where fp16 rounding shows.
    return [
        FakeLoraLayer([(-1) ** i * (0.3 + 0.37 * i + 0.011 * layer) for i in range(16)], [0.0123 * ((i * 7 + layer) % 11 - 5) for i in range(16)])
        for layer in range(4)
    ]


@dataclass
class FakeScheduler:
    name: str
    config: dict[str, Any] = field(default_factory=lambda: {"num_train_timesteps": 1000})
    # PNDM (skip_prk_steps) makes one more U-Net call than num_inference_steps.
    extra_calls: int = 0
    timesteps: list[int] = field(default_factory=list)

    def set_timesteps(self, steps: int) -> None:
        self.timesteps = list(range(999, 999 - steps - self.extra_calls, -1))


class FakeVae:
    def __init__(self) -> None:
        self.dtype = "float16"
        self.slicing = False
        self.fail_next_decode = False

    def enable_slicing(self) -> None:
        self.slicing = True

    def to(self, dtype: str) -> FakeVae:
        self.dtype = dtype
        return self

    def decode(self, latents_dtype: str) -> None:
        if latents_dtype != self.dtype:
            raise RuntimeError("Input type (c10::Half) and bias type (float) should be the same")
        if self.fail_next_decode:
            self.fail_next_decode = False
            raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")


class FakeDiffusersPipe:
    def __init__(
        self, seconds_per_step: float = 0.0, clock: list[float] | None = None, seconds_per_decode: float = 0.0, queued: bool = False
    ) -> None:
        self.layers = make_layers()
        self.base = [list(layer.weight.values) for layer in self.layers]
        self.scheduler = FakeScheduler("model's own")
        self.calls: list[dict[str, Any]] = []
        self.fuses = 0
        # Fail the next fuse after merging this many layers (None: do not fail).
        self.fail_fuse_after: int | None = None
        self._interrupt = False
        self.vae = FakeVae()
        self._seconds_per_step = seconds_per_step
        self._seconds_per_decode = seconds_per_decode
        self._clock = clock
        self.decodes = 0
        self.num_timesteps = 0
        self._queued = queued
        self._pending = 0.0

    def _run(self, seconds: float) -> None:
        if self._clock is None:
            return
        if self._queued:
            self._pending += seconds
        else:
            self._clock[0] += seconds

    def synchronize(self) -> None:
        if self._clock is not None:
            self._clock[0] += self._pending
        self._pending = 0.0

    @property
    def weights(self) -> list[list[float]]:
        return [list(layer.weight.values) for layer in self.layers]

    @property
    def effective_scale(self) -> float:
        """The scale the weights carry, whatever PEFT believes: the least-squares fit of W - W0 = scale * delta."""
        pairs = [(w - b, d) for layer, base in zip(self.layers, self.base, strict=True) for w, b, d in zip(layer.weight.values, base, layer.delta, strict=True)]
        return sum(moved * d for moved, d in pairs) / sum(d * d for _, d in pairs)

    @property
    def peft_state(self) -> set[tuple[bool, float]]:
        """(merged, scaling) of every layer: one element when the layers agree."""
        return {(layer.merged, layer.scaling) for layer in self.layers}

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        # diffusers' set_weights_and_activate_adapters: set_scale on every layer, merged or not.
        assert names == [ADAPTER]
        for layer in self.layers:
            layer.scaling = adapter_weights[0]

    def fuse_lora(self, adapter_names: list[str], lora_scale: float = 1.0) -> None:
        # diffusers' _fuse_lora_apply: scale_layer(lora_scale) if it is not 1, then merge, layer by layer.
        assert adapter_names == [ADAPTER]
        for index, layer in enumerate(self.layers):
            if index == self.fail_fuse_after:
                self.fail_fuse_after = None
                raise RuntimeError("CUDA out of memory while fusing")
            if lora_scale != 1.0:
                layer.scaling *= lora_scale
            layer.merge()
        self.fuses += 1

    def unfuse_lora(self) -> None:
        for layer in self.layers:
            layer.unmerge()

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append({**kwargs, "scheduler": self.scheduler, "effective_scale": self.effective_scale})
        self._interrupt = False
        self.scheduler.set_timesteps(kwargs["num_inference_steps"])
        self.num_timesteps = len(self.scheduler.timesteps)
        for step, timestep in enumerate(self.scheduler.timesteps):
            if self._interrupt:
                continue
            self._run(self._seconds_per_step)
            kwargs["callback_on_step_end"](self, step, timestep, {})
        # pipeline_stable_diffusion_xl.py: needs_upcasting = vae.dtype == float16 and force_upcast.
        latents_dtype = "float16"
        needs_upcasting = self.vae.dtype == "float16"
        if needs_upcasting:
            self.vae.to(dtype="float32")
            latents_dtype = "float32"
        self.decodes += 1
        self._run(self._seconds_per_decode)
        self.vae.decode(latents_dtype)
        if needs_upcasting:
            self.vae.to(dtype="float16")
        self.synchronize()  # postprocess: image.cpu()
        images = [Image.new("RGB", (kwargs["width"], kwargs["height"])) for _ in kwargs["generator"]]
        return type("Output", (), {"images": images})()


def params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = {
        "prompt": "Green pokemon with menacing face", "negative_prompt": None, "num_inference_steps": 25,
        "guidance_scale": 7.5, "width": 64, "height": 64, "seed": 100, "num_images": 1, "lora_scale": 0.8,
        "scheduler": "default", "output_format": "png",
    }
    return GenerationParams(**{**values, **overrides})


def build(
    pipe: FakeDiffusersPipe, lora_scale: float = 0.8, clock: list[float] | None = None, reserve: float = 2.0, synchronize: Any = None
) -> tuple[DiffusersPipeline, list[tuple[str, Any]], io.StringIO]:
    built: list[tuple[str, Any]] = []
    log = io.StringIO()

    def make_scheduler(name: str, config: Any) -> FakeScheduler:
        built.append((name, config))
        return FakeScheduler(name, config)

    time = clock if clock is not None else [0.0]
    pipeline = DiffusersPipeline(
        pipe,
        lora_scale=lora_scale,
        make_generator=lambda seed: f"generator({seed})",
        make_scheduler=make_scheduler,
        log=JsonLog(log),
        vae_dtype="float16",
        empty_cache=lambda: pipe.calls.append({"empty_cache": True}),
        lora_weights=lambda: [layer.weight for layer in pipe.layers],
        finish_reserve=lambda params: reserve,
        clock=lambda: time[0],
        synchronize=synchronize or (lambda: None),
    )
    return pipeline, built, log


def test_the_lora_is_fused_at_lora_scale_when_loaded() -> None:
    pipe = FakeDiffusersPipe()
    pipeline, _, log = build(pipe, lora_scale=0.8)
    assert (pipe.peft_state, pipe.effective_scale, pipeline.fused_scale) == ({(True, 0.8)}, pytest.approx(0.8, abs=0.01), 0.8)
    assert json.loads(log.getvalue())["event"] == "lora_fused"


def test_a_request_at_another_scale_refuses_once_and_a_later_default_request_restores_it() -> None:
    pipe = FakeDiffusersPipe()
    pipeline, _, log = build(pipe, lora_scale=0.8)
    seen = []
    for scale in (0.8, 1.5, 1.5, 0.0, 0.8, 2.0):
        pipeline.generate(params(lora_scale=scale), deadline=1e9)
        seen.append(pipe.calls[-1]["effective_scale"])
        assert pipe.peft_state == {(True, scale)}
    assert seen == pytest.approx([0.8, 1.5, 1.5, 0.0, 0.8, 2.0], abs=0.01)
    # One fuse at load, then one per change of scale away from LORA_SCALE; none for a repeated scale.
    assert pipe.fuses == 1 + 3
    # The fused weights were copied once, before the first change: 4 layers of 16 fp16 values.
    assert [json.loads(line)["bytes"] for line in log.getvalue().splitlines() if "lora_weights_saved" in line] == [4 * 16 * 2]


def _alternate(pipeline: DiffusersPipeline, scales: list[float]) -> None:
    for scale in scales:
        pipeline.apply_lora_scale(scale)


SCALES = [1.5, 0.8, 0.3, 0.8, 2.0, 0.8, 1.1, 0.8] * 20  # ends at LORA_SCALE (0.8)


def test_weights_at_lora_scale_stay_exactly_as_fused_at_load_however_often_the_scale_changes() -> None:
    pipe = FakeDiffusersPipe()
    pipeline, _, _ = build(pipe, lora_scale=0.8)
    fused = pipe.weights
    _alternate(pipeline, SCALES)
    assert pipe.weights == fused
    assert pipe.peft_state == {(True, 0.8)}


def test_weights_at_another_scale_are_one_refuse_from_the_load_time_weights_never_more() -> None:
    pipe = FakeDiffusersPipe()
    pipeline, _, _ = build(pipe, lora_scale=0.8)
    pipeline.apply_lora_scale(1.5)
    once = pipe.weights
    _alternate(pipeline, [*SCALES, 1.5])
    assert pipe.weights == once
    assert pipe.peft_state == {(True, 1.5)}


def test_negative_control_refusing_without_the_copy_lets_the_weights_drift() -> None:
    # The former way: unfuse, set_adapters, fuse, each rounding the fp16 weights once more.
    pipe = FakeDiffusersPipe()
    pipe.set_adapters([ADAPTER], adapter_weights=[0.8])
    pipe.fuse_lora([ADAPTER])
    fused = pipe.weights
    for scale in SCALES:
        pipe.unfuse_lora()
        pipe.set_adapters([ADAPTER], adapter_weights=[scale])
        pipe.fuse_lora([ADAPTER])
    assert pipe.peft_state == {(True, 0.8)}
    assert pipe.weights != fused


def test_negative_control_fuse_lora_with_a_scale_would_compound() -> None:
    # Why DiffusersPipeline sets the scale with set_adapters: fuse_lora(lora_scale=s) multiplies.
    pipe = FakeDiffusersPipe()
    pipe.set_adapters([ADAPTER], adapter_weights=[1.0])
    pipe.fuse_lora([ADAPTER], lora_scale=0.8)
    pipe.unfuse_lora()
    pipe.fuse_lora([ADAPTER], lora_scale=1.5)
    assert pipe.effective_scale == pytest.approx(1.2, abs=0.01)


@pytest.mark.parametrize("next_scale", [1.0, 0.5, 1.7])
def test_a_refuse_that_fails_part_way_is_repaired_by_the_next_request(next_scale: float) -> None:
    pipe = FakeDiffusersPipe()
    pipeline, _, _ = build(pipe, lora_scale=1.0)
    fused = pipe.weights
    pipeline.apply_lora_scale(1.7)
    at_17 = pipe.weights
    pipe.fail_fuse_after = 2  # two layers merged at 0.5, two not merged at all
    with pytest.raises(RuntimeError, match="while fusing"):
        pipeline.generate(params(lora_scale=0.5), deadline=1e9)
    assert pipeline.fused_scale is None
    assert len(pipe.peft_state) == 2
    pipeline.generate(params(lora_scale=next_scale), deadline=1e9)
    assert (pipe.peft_state, pipeline.fused_scale) == ({(True, next_scale)}, next_scale)
    assert pipe.calls[-1]["effective_scale"] == pytest.approx(next_scale, abs=0.01)
    if next_scale == 1.0:
        assert pipe.weights == fused
    if next_scale == 1.7:
        assert pipe.weights == at_17


def test_negative_control_a_failed_decode_leaves_the_vae_in_fp32_and_breaks_later_requests() -> None:
    # What the fake models of diffusers 0.40's SDXL pipeline, called directly (no recovery).
    pipe = FakeDiffusersPipe()
    pipe.vae.fail_next_decode = True
    call = {"num_inference_steps": 2, "width": 8, "height": 8, "generator": [None], "callback_on_step_end": lambda *a: a[-1]}
    with pytest.raises(RuntimeError, match="out of memory"):
        pipe(**call)
    assert pipe.vae.dtype == "float32"
    with pytest.raises(RuntimeError, match="should be the same"):
        pipe(**call)


def test_after_a_failed_decode_the_vae_is_back_in_fp16_and_the_next_request_succeeds() -> None:
    pipe = FakeDiffusersPipe()
    pipeline, _, log = build(pipe, lora_scale=1.0)
    assert pipe.vae.slicing  # images are decoded one at a time
    pipe.vae.fail_next_decode = True
    with pytest.raises(RuntimeError, match="out of memory"):
        pipeline.generate(params(lora_scale=1.0), deadline=1e9)
    assert pipe.vae.dtype == "float16"
    assert pipe.calls[-1] == {"empty_cache": True}
    assert "generation_recovered" in log.getvalue()
    assert len(pipeline.generate(params(lora_scale=1.0), deadline=1e9)) == 1


def test_the_request_is_passed_to_diffusers_with_one_generator_per_image() -> None:
    pipe = FakeDiffusersPipe()
    pipeline, _, _ = build(pipe)
    images = pipeline.generate(params(num_images=3, seed=7, negative_prompt="blurry", width=96, height=128), deadline=1e9)
    call = pipe.calls[-1]
    assert call["generator"] == ["generator(7)", "generator(8)", "generator(9)"]
    assert {k: call[k] for k in ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "width", "height", "num_images_per_prompt")} == {
        "prompt": "Green pokemon with menacing face", "negative_prompt": "blurry", "num_inference_steps": 25,
        "guidance_scale": 7.5, "width": 96, "height": 128, "num_images_per_prompt": 3,
    }
    assert [i.size for i in images] == [(96, 128)] * 3


def paced(seconds_per_step: float) -> tuple[DiffusersPipeline, list[float]]:
    """A pipeline whose steps each take `seconds_per_step` on a clock the test controls."""
    clock = [0.0]
    pipeline, _, _ = build(FakeDiffusersPipe(seconds_per_step=seconds_per_step, clock=clock), clock=clock)
    return pipeline, clock


def test_denoising_stops_as_soon_as_the_steps_left_would_end_past_the_deadline() -> None:
    pipeline, clock = paced(1.0)
    # 25 steps at 1 s each cannot end by 10 s: seen after the second step, not at the deadline.
    with pytest.raises(GenerationTimeout, match="stopped after 2 of 25 denoising steps: the request would not finish within its time limit"):
        pipeline.generate(params(), deadline=10.0)
    # Negative control: with time to spare the same request completes.
    clock[0] = 0.0
    assert len(pipeline.generate(params(), deadline=30.0)) == 1


def test_a_request_stopped_at_its_deadline_answers_at_once_without_decoding() -> None:
    clock = [0.0]
    pipe = FakeDiffusersPipe(seconds_per_step=1.0, clock=clock, seconds_per_decode=30.0)
    pipeline, _, _ = build(pipe, clock=clock)
    with pytest.raises(GenerationTimeout, match="stopped after 2 of 25 denoising steps"):
        pipeline.generate(params(), deadline=10.0)
    # Left at the second step: no decode, nothing past the deadline.
    assert (pipe.decodes, clock[0]) == (0, 2.0)
    assert "empty_cache" not in pipe.calls[-1]  # no recovery: there is nothing to undo
    # The next request runs in full, decode included.
    clock[0] = 0.0
    assert len(pipeline.generate(params(), deadline=60.0)) == 1
    assert (pipe.decodes, clock[0]) == (1, 55.0)


@pytest.mark.parametrize("decode_seconds", [30.0, 1.0])
def test_a_decode_slower_than_the_whole_reserve_ends_denoising_earlier_by_the_difference(decode_seconds: float) -> None:
    # On the CPU a decode takes far longer than the reserve, which is set for GPUs. 25 steps of 1 s.
    clock = [0.0]
    pipeline, _, _ = build(FakeDiffusersPipe(seconds_per_step=1.0, clock=clock, seconds_per_decode=decode_seconds), clock=clock, reserve=2.0)
    for _ in range(2):  # the first decode of a size is warm-up: not trusted
        assert pipeline.decode_excess(params()) == 0.0
        clock[0] = 0.0
        pipeline.generate(params(), deadline=40.0)
    assert clock[0] == 25.0 + decode_seconds
    excess = pipeline.decode_excess(params())
    assert excess == max(0.0, decode_seconds - 2.0)
    clock[0] = 0.0
    if decode_seconds <= 2.0:
        # Negative control: a decode within the reserve changes nothing.
        assert len(pipeline.generate(params(), deadline=40.0)) == 1
        return
    # 10 steps fit: denoised at 10 s, decoded at 40 s, within the 2 s reserve after the deadline.
    assert len(pipeline.generate(params(num_inference_steps=10), deadline=40.0)) == 1
    assert clock[0] == 40.0
    clock[0] = 0.0
    with pytest.raises(NotEnoughTime) as refused:
        pipeline.generate(params(), deadline=40.0)
    assert refused.value.needed_seconds == pytest.approx(25.0 + excess)


def test_denoising_stops_at_the_deadline_even_on_the_first_step() -> None:
    pipeline, _ = paced(5.0)
    with pytest.raises(GenerationTimeout, match="stopped after 1 of 25 denoising steps"):
        pipeline.generate(params(), deadline=4.0)


def test_a_request_the_last_pace_says_cannot_end_in_time_is_refused_before_any_gpu_work() -> None:
    pipeline, clock = paced(1.0)
    assert pipeline.estimate_seconds(params()) is None  # nothing measured yet: never refused
    pipeline.generate(params(num_inference_steps=10, num_images=2), deadline=1e9)  # 1 s a step
    pipe = pipeline._pipe
    calls, fuses = len(pipe.calls), pipe.fuses
    clock[0] = 0.0
    # 25 steps at 1 s each: 25 s, with 20 s left.
    with pytest.raises(NotEnoughTime) as refused:
        pipeline.generate(params(num_images=2, lora_scale=1.5), deadline=20.0)
    assert (refused.value.needed_seconds, refused.value.left_seconds) == (pytest.approx(25.0), 20.0)
    assert (len(pipe.calls), pipe.fuses) == (calls, fuses)  # no denoising, no re-fuse
    # Negative controls: with the time it needs, the same request runs; one of another shape (other
    # pixels, or no guidance) has no estimate, so only the step callback can stop it.
    assert len(pipeline.generate(params(num_images=2, lora_scale=1.5), deadline=26.0)) == 2
    assert pipeline.estimate_seconds(params(num_images=1)) is None
    assert pipeline.estimate_seconds(params(num_images=2, guidance_scale=1.0)) is None


def test_schedulers_are_built_once_from_the_models_own_config_and_default_restores_it() -> None:
    pipe = FakeDiffusersPipe()
    original = pipe.scheduler
    pipeline, built, _ = build(pipe)
    for name in ("euler_a", "dpmpp_2m_karras", "euler_a", "default"):
        pipeline.generate(params(scheduler=name), deadline=1e9)
    assert [c["scheduler"].name for c in pipe.calls] == ["euler_a", "dpmpp_2m_karras", "euler_a", "model's own"]
    assert built == [("euler_a", original.config), ("dpmpp_2m_karras", original.config)]
    assert pipe.scheduler is original


def test_the_decode_is_timed_after_the_queued_steps_have_run_as_on_cuda() -> None:
    # On CUDA the step callbacks run as steps are queued; the steps run at the first synchronization.
    for synchronized, decode in ((True, 3.0), (False, 25.0 + 3.0)):
        clock = [0.0]
        pipe = FakeDiffusersPipe(seconds_per_step=1.0, clock=clock, seconds_per_decode=3.0, queued=True)
        pipeline, _, _ = build(pipe, clock=clock, reserve=4.0, synchronize=pipe.synchronize if synchronized else None)
        for _ in range(2):
            pipeline.generate(params(), deadline=1e9)
        # Negative control (no synchronize): the queued steps count as decode, past the 4 s reserve.
        assert pipeline.decode_excess(params()) == max(0.0, decode - 4.0)


def test_the_decode_time_is_the_least_of_the_last_few_and_not_the_first() -> None:
    clock = [0.0]
    pipe = FakeDiffusersPipe(seconds_per_step=1.0, clock=clock, seconds_per_decode=30.0)
    pipeline, _, _ = build(pipe, clock=clock, reserve=2.0)
    pipeline.generate(params(), deadline=1e9)
    assert pipeline.decode_excess(params()) == 0.0  # warm-up alone
    pipeline.generate(params(), deadline=1e9)
    assert pipeline.decode_excess(params()) == 28.0
    pipe._seconds_per_decode = 1.0
    pipeline.generate(params(), deadline=1e9)
    assert pipeline.decode_excess(params()) == 0.0  # one fast decode is enough


def test_a_size_refused_for_its_decode_alone_is_measured_again_never_locked_out() -> None:
    clock = [0.0]
    pipe = FakeDiffusersPipe(seconds_per_step=1.0, clock=clock, seconds_per_decode=30.0)
    pipeline, _, _ = build(pipe, clock=clock, reserve=2.0)
    for _ in range(2):
        pipeline.generate(params(), deadline=1e9)
    # A slow decode once (a hiccup): 25 steps + 28 s of excess do not fit in 40 s.
    pipe._seconds_per_decode = 1.0
    clock[0] = 0.0
    with pytest.raises(NotEnoughTime):
        pipeline.generate(params(), deadline=40.0)
    # The refusal forgot the decode time: the next request runs, and measures the decode again.
    assert len(pipeline.generate(params(), deadline=40.0)) == 1
    assert pipeline.decode_excess(params()) == 0.0
    clock[0] = 0.0
    assert len(pipeline.generate(params(), deadline=40.0)) == 1


def test_a_request_stopped_early_records_no_pace_and_the_first_step_is_not_counted() -> None:
    clock = [0.0]
    pipe = FakeDiffusersPipe(seconds_per_step=1.0, clock=clock)
    pipeline, _, _ = build(pipe, clock=clock)
    # A 20 s first step (warm-up) then 1 s steps: stopped at its second step, it records no pace.
    pipe._seconds_per_step = 20.0
    original = pipe._run
    pipe._run = lambda seconds: (original(seconds), setattr(pipe, "_seconds_per_step", 1.0))  # type: ignore[method-assign]
    with pytest.raises(GenerationTimeout, match="stopped after 2 of 25 denoising steps"):
        pipeline.generate(params(), deadline=30.0)
    assert pipeline.estimate_seconds(params()) is None
    # A whole request, warm-up first step included, is paced at its later steps' 1 s.
    pipe._seconds_per_step = 20.0
    pipeline.generate(params(num_inference_steps=10), deadline=1e9)
    assert pipeline.estimate_seconds(params()) == pytest.approx(25.0)


def test_pndm_makes_one_more_unet_call_than_steps_and_the_pace_is_per_call() -> None:
    clock = [0.0]
    pipe = FakeDiffusersPipe(seconds_per_step=1.0, clock=clock)
    pipe.scheduler.extra_calls = 1
    pipeline, _, _ = build(pipe, clock=clock)
    pipeline.generate(params(num_inference_steps=4), deadline=1e9)
    assert (clock[0], pipeline.estimate_seconds(params(num_inference_steps=4))) == (5.0, 5.0)
    clock[0] = 0.0
    with pytest.raises(GenerationTimeout, match="stopped after 2 of 5 denoising steps"):
        pipeline.generate(params(num_inference_steps=4, guidance_scale=1.0), deadline=4.5)


def test_a_request_stopped_for_its_decode_alone_forgets_the_decode_time_too() -> None:
    clock = [0.0]
    pipe = FakeDiffusersPipe(seconds_per_step=1.0, clock=clock, seconds_per_decode=30.0)
    pipeline, _, _ = build(pipe, clock=clock, reserve=2.0)
    for _ in range(2):  # 3 steps: too few to record a pace, so nothing refuses the next one up front
        pipeline.generate(params(num_inference_steps=3), deadline=1e9)
    assert (pipeline.estimate_seconds(params()), pipeline.decode_excess(params())) == (None, 28.0)
    clock[0] = 0.0
    with pytest.raises(GenerationTimeout, match="stopped after 1 of 3 denoising steps"):
        pipeline.generate(params(num_inference_steps=3), deadline=10.0)
    assert pipeline.decode_excess(params()) == 0.0  # measured again by the next request
