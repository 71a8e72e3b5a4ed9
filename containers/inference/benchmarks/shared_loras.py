"""Benchmark of shared mode's LoRA switching on the real diffusers, with the tiny CPU pipelines (a script, not a test).

CPU figures on tiny random-weight models: they show the shape of the costs (which tier costs what,
that memory stays flat), not what a GPU with SD 1.5 or SDXL takes. From containers/inference:

    LORA_TEST_PYTHON_TRAINING=../../.venv/training/bin/python LORA_TEST_SD_SCRIPTS=../../.venv/training/sd-scripts \\
    LORA_TEST_PYTHON_TOOLS=../../.venv/tools/bin/python ../../.venv/inference/bin/python -m benchmarks.shared_loras [--out FILE]

One LoRA is written by kohya-ss's own code (tests/kohya_lora_fixture.py); 50 are made from it with
its keys, shapes and metadata and seeded random weights, uploaded to a local moto S3 and fetched
through the server's own disk tier (lora_fetch.DiskTier, the real boto3 client).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lora_server.diffusers_pipeline import load_pipeline
from lora_server.logs import JsonLog
from lora_server.lora_fetch import DiskTier
from lora_server.metrics import Metrics
from lora_server.shared_pipeline import SharedDiffusersPipeline, load_shared_pipeline
from lora_server.shared_types import LocalLora, LoraVersion
from lora_server.validation import GenerationParams
from tests.conftest import settings_for
from tests.moto_server import BUCKET, Moto, start_moto
from tests.tiny_pipelines import save_all

LORAS = 50
SWITCHES = 200
WARM_UP = 50  # switches before memory is taken as the baseline: every LoRA has been fetched by then
SAMPLES = 10  # timings per figure (the median is reported)
FLAT = 0.05
SIDE = 64
PREFIX = "loras/"  # the registry function copies each LoRA to loras/<name>/<version>.safetensors


def kohya_lora(tiny_folder: Path, out: Path, model_type: str = "sd15") -> Path:
    python, sd_scripts = os.environ["LORA_TEST_PYTHON_TRAINING"], os.environ["LORA_TEST_SD_SCRIPTS"]
    script = Path(__file__).parents[1] / "tests" / "kohya_lora_fixture.py"
    subprocess.run([python, str(script), str(tiny_folder), model_type, str(out), "--sd-scripts", sd_scripts], check=True, capture_output=True)
    return out


def variants(source: Path, folder: Path, count: int) -> list[Path]:
    """`count` LoRAs with the source's keys, shapes, dtypes and metadata, and seeded random weights of its spread."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(source))
    with safe_open(str(source), "pt") as f:
        metadata = f.metadata()
    paths = []
    for i in range(count):
        generator = torch.Generator().manual_seed(1000 + i)
        changed = {
            k: v if k.endswith(".alpha") else (torch.randn(v.shape, generator=generator) * v.float().std()).to(v.dtype)
            for k, v in tensors.items()
        }
        path = folder / f"lora{i}.safetensors"
        save_file(changed, str(path), metadata=metadata)
        paths.append(path)
    return paths


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def median_ms(run: Callable[[], Any], before: Callable[[], Any] = lambda: None, samples: int = SAMPLES) -> float:
    times = []
    for _ in range(samples):
        before()
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def request(steps: int = 2) -> GenerationParams:
    return GenerationParams(
        prompt="Green pokemon with menacing face", negative_prompt=None, num_inference_steps=steps, guidance_scale=7.5,
        width=SIDE, height=SIDE, seed=42, num_images=1, lora_scale=1.0, scheduler="default", output_format="png",
    )


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.tiny = save_all("sd15", work / "tiny")
        source = kohya_lora(self.tiny["folder"], work / "kohya.safetensors")
        (work / "loras").mkdir()
        self.files = variants(source, work / "loras", LORAS)
        python = os.environ["LORA_TEST_PYTHON_TOOLS"]
        self.moto_process, endpoint = start_moto(python)
        self.moto = Moto(endpoint)
        self.moto.client("s3").create_bucket(Bucket=BUCKET)
        self.versions = [self._upload(i, path) for i, path in enumerate(self.files)]
        self.log = JsonLog(io.StringIO())
        self.metrics = Metrics("Benchmark", {"Endpoint": "tiny"}, emit=lambda line: None)

    def _upload(self, i: int, path: Path) -> LoraVersion:
        key = f"{PREFIX}lora{i}/1.safetensors"
        data = path.read_bytes()
        self.moto.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)
        return LoraVersion(
            name=f"lora{i}", version=1, status="ready", model_type="sd15", base_model="tiny", s3_uri=f"s3://{BUCKET}/{key}",
            sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        )

    def settings(self, **overrides: Any) -> Any:
        values = {
            "model_type": "sd15", "base_model_path": self.tiny["folder"], "configs_dir": self.tiny["configs"], "device": "cpu",
            "dtype": "float32", "serving_mode": "shared", "lora_bucket": BUCKET, "lora_prefix": PREFIX, "aws_region": "us-east-1",
            "lora_cache_dir": self.work / "disk", "lora_cache_disk_bytes": 1 << 30,
        }
        return settings_for(self.work, **{**values, **overrides})

    def close(self) -> None:
        self.moto_process.terminate()
        self.moto_process.wait(10)


def switch_times(bench: Bench, shared: SharedDiffusersPipeline, disk: DiskTier) -> dict[str, float]:
    """Median ms to give the model one LoRA's weights, by where the LoRA is found (the previous set: another LoRA)."""
    versions = bench.versions[:SAMPLES + 1]
    state = {"i": 0}

    def next_lora() -> LoraVersion:
        state["i"] = (state["i"] + 1) % len(versions)
        return versions[state["i"]]

    def switch(version: LoraVersion) -> None:
        with disk.use([version], [1.0], float("inf")) as loras:
            shared.apply(loras)

    def forget(version: LoraVersion, *tiers: Any) -> None:
        for tier in tiers:
            tier.remove(version.sha256 if tier is disk.cache else f"{version.name}@{version.version}")

    for version in versions:  # every LoRA on disk, in host memory and on the "GPU" tier
        switch(version)
    results = {}
    for tier, forgotten in (("device", ()), ("host", (shared.gpu_tier,)), ("disk", (shared.gpu_tier, shared.host_tier)),
                            ("miss (S3, moto)", (shared.gpu_tier, shared.host_tier, disk.cache))):
        pending: list[LoraVersion] = []

        def before(forgotten: tuple[Any, ...] = forgotten, pending: list[LoraVersion] = pending) -> None:
            version = next_lora()
            for f in forgotten:
                forget(version, f)
            pending.append(version)

        results[tier] = median_ms(lambda pending=pending: switch(pending.pop()), before)
        for version in versions:
            switch(version)  # back in every tier for the next figure
    return results


SDXL_SAMPLES = 5


def sdxl_switch_times(work: Path) -> tuple[int, dict[str, float]]:
    """As switch_times, for the tiny SDXL (746 LoRA modules: the real SDXL's count) from local files: device, host, disk."""
    tiny = save_all("sdxl", work / "tiny-sdxl")
    (work / "sdxl-loras").mkdir()
    files = variants(kohya_lora(tiny["folder"], work / "kohya-sdxl.safetensors", "sdxl"), work / "sdxl-loras", SDXL_SAMPLES + 1)
    loras = [
        LocalLora(LoraVersion(f"xl{i}", 1, "ready", "sdxl", "tiny", uri, f"{i:064x}", path.stat().st_size), path, 1.0)
        for i, path in enumerate(files)
        for uri in [f"s3://{BUCKET}/{PREFIX}xl{i}/1.safetensors"]
    ]
    settings = settings_for(
        work, model_type="sdxl", base_model_path=tiny["folder"], configs_dir=tiny["configs"], device="cpu", dtype="float32",
        serving_mode="shared", lora_cache_host_bytes=1 << 30, lora_cache_gpu_bytes=1 << 30,
    )
    shared = load_shared_pipeline(settings, JsonLog(io.StringIO()), Metrics("Benchmark", {"Endpoint": "tiny"}, emit=lambda line: None))
    turn = {"i": 0}
    results = {}
    for tier, forgotten in (("device", ()), ("host", (shared.gpu_tier,)), ("disk", (shared.gpu_tier, shared.host_tier))):
        for lora in loras:
            shared.apply([lora])
        pending: list[LocalLora] = []

        def before(forgotten: tuple[Any, ...] = forgotten, pending: list[LocalLora] = pending) -> None:
            turn["i"] = (turn["i"] + 1) % len(loras)
            for tier_cache in forgotten:
                tier_cache.remove(loras[turn["i"]].key)
            pending.append(loras[turn["i"]])

        results[tier] = median_ms(lambda pending=pending: shared.apply([pending.pop()]), before, SDXL_SAMPLES)
    return shared.gpu_tier.used_bytes // len(loras), results


def overhead(bench: Bench, shared: SharedDiffusersPipeline, disk: DiskTier) -> dict[str, float]:
    """Median ms of a whole request: the dedicated fused server, and shared mode with the same LoRA and with alternating ones."""
    model_dir = bench.work / "dedicated-model"
    model_dir.mkdir()
    (model_dir / "lora.safetensors").write_bytes(bench.files[0].read_bytes())
    dedicated = load_pipeline(bench.settings(model_dir=model_dir, serving_mode="dedicated"), bench.log)
    with disk.use(bench.versions[:2], [1.0, 1.0], float("inf")) as (first, second):
        turn = [first, second]

        def the_other() -> list[LocalLora]:
            turn.reverse()
            return [turn[0]]

        figures = {
            "dedicated (fused)": median_ms(lambda: dedicated.generate(request(), float("inf"))),
            "shared, same LoRA": median_ms(lambda: shared.generate(request(), float("inf"), [first])),
            "shared, 2 LoRAs alternating (device tier)": median_ms(
                lambda: shared.generate(request(), float("inf"), the_other())
            ),
            "shared, base model alone": median_ms(lambda: shared.generate(request(), float("inf"), [])),
        }
    return figures


def live_tensors() -> tuple[int, int]:
    """How many torch tensors are alive, and the bytes of their distinct storages (RSS cannot see a KB-sized leak)."""
    gc.collect()
    count, storages = 0, {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            count += 1
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return count, sum(storages.values())


Sample = tuple[int, int, int, int, int]  # switch, RSS, device-tier bytes, live tensors, their bytes


def memory(bench: Bench, shared: SharedDiffusersPipeline, disk: DiskTier, size: int) -> tuple[list[Sample], bool, int]:
    """RSS, device-tier bytes and live tensors every 10 switches over SWITCHES random sets of 1-3 of the LORAS.

    Flat after WARM_UP: RSS and the device tier within FLAT, and the live tensors' bytes grown by less than
    one converted LoRA (`size`): every tier is full by then, so one LoRA kept per request would show at once.
    Also returns the growth one deliberately kept LoRA causes (the check's own negative control).
    """
    chooser = random.Random(7)
    samples: list[Sample] = []
    for switch in range(1, SWITCHES + 1):
        chosen = chooser.sample(bench.versions, chooser.randint(1, 3))
        scales = [round(chooser.uniform(0.5, 1.5), 2) for _ in chosen]
        with disk.use(chosen, scales, float("inf")) as loras:
            shared.generate(request(1), float("inf"), loras)
        if switch % 10 == 0:
            samples.append((switch, rss_bytes(), shared.gpu_tier.used_bytes, *live_tensors()))
    baseline = next(s for s in samples if s[0] == WARM_UP)
    after = [s for s in samples if s[0] >= WARM_UP]
    flat = all(
        rss <= baseline[1] * (1 + FLAT) and gpu <= max(baseline[2], 1) * (1 + FLAT) and tensor_bytes - baseline[4] < size
        for _, rss, gpu, _, tensor_bytes in after
    )
    kept = shared._convert(bench.files[0])  # noqa: SLF001 - one leaked LoRA, as a leak would keep it
    leak = live_tensors()[1] - samples[-1][4]
    del kept
    return samples, flat, leak


def machine() -> str:
    names = (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    model = next(names, platform.processor())
    return f"{os.cpu_count()} cores, {model}, torch {torch.__version__} ({torch.get_num_threads()} thread), Python {platform.python_version()}"


def report(
    bench: Bench, size: int, settings: Any, switches: dict[str, float], requests: dict[str, float],
    memory: tuple[list[Sample], bool, int], pristine: int, sdxl: tuple[int, dict[str, float]],
) -> str:
    samples, flat, leak = memory
    mb = 1024 * 1024
    settled = [s for s in samples if s[0] >= WARM_UP]
    lines = [
        "## Shared-mode LoRA benchmark: CPU figures on tiny models",
        "",
        f"Machine: {machine()}. Tiny random-weight SD 1.5 pipeline (tests/tiny_pipelines.py), {SIDE}x{SIDE} px, float32 on the CPU;",
        f"{LORAS} LoRAs of {len(bench.files[0].read_bytes()) // 1024} KiB each (kohya-ss layout, 60 modules, rank 4; "
        f"{size // 1024} KiB converted). Tiers: host {settings.lora_cache_host_bytes // size} LoRAs, "
        f"device {settings.lora_cache_gpu_bytes // size} LoRAs "
        "(on the CPU the device tier is a second, separately counted copy). Medians of "
        f"{SAMPLES}. These show the shape of the costs, not GPU figures.",
        "",
        "| switch to a LoRA found in | median ms |",
        "|---|---|",
        *(f"| {tier} | {ms:.1f} |" for tier, ms in switches.items()),
        "",
        f"Tiny SDXL (kohya's smallest SDXL U-Net, 746 LoRA modules as the real SDXL's, {sdxl[0] // 1024} KiB converted), "
        f"medians of {SDXL_SAMPLES}, local files:",
        "",
        "| SDXL: switch to a LoRA found in | median ms |",
        "|---|---|",
        *(f"| {tier} | {ms:.1f} |" for tier, ms in sdxl[1].items()),
        "",
        "| whole request (2 steps, 64x64) | median ms | overhead vs dedicated |",
        "|---|---|---|",
    ]
    base = requests["dedicated (fused)"]
    lines += [f"| {name} | {ms:.1f} | {ms - base:+.1f} |" for name, ms in requests.items()]
    lines += [
        "",
        f"Memory over {SWITCHES} requests, each a random set of 1-3 of the {LORAS} LoRAs at random scales (baseline: after {WARM_UP}):",
        "",
        "| after switch | host RSS (MiB) | device tier (KiB) | live tensors | their bytes (KiB) |",
        "|---|---|---|---|---|",
        *(f"| {n} | {rss / mb:.1f} | {gpu / 1024:.0f} | {count} | {nbytes / 1024:.0f} |" for n, rss, gpu, count, nbytes in samples if n % 50 == 0),
        "",
        f"Flat after warm-up (RSS and device tier within {FLAT:.0%}; live tensor bytes grown by less than one converted LoRA, "
        f"{size // 1024} KiB): **{'PASS' if flat else 'FAIL'}** "
        f"(RSS {min(s[1] for s in settled) / mb:.1f}-{max(s[1] for s in settled) / mb:.1f} MiB; "
        f"live tensors {min(s[3] for s in settled)}-{max(s[3] for s in settled)}, "
        f"{min(s[4] for s in settled) / 1024:.0f}-{max(s[4] for s in settled) / 1024:.0f} KiB; "
        f"pristine copies {pristine / mb:.1f} MiB).",
        f"The check's negative control: one converted LoRA deliberately kept alive adds {leak / 1024:.0f} KiB of live tensors "
        f"({'seen' if leak >= size else 'NOT seen'} by the check; RSS's 5 % of ~500 MiB would need ~70 such LoRAs).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the tests: the machine's few cores are shared
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(Path(folder))
        try:
            probe = load_shared_pipeline(bench.settings(), bench.log, bench.metrics)
            size = probe._convert(bench.files[0]).nbytes
            del probe
            settings = bench.settings(lora_cache_host_bytes=20 * size, lora_cache_gpu_bytes=8 * size)
            shared = load_shared_pipeline(settings, bench.log, bench.metrics)
            disk = DiskTier(settings, bench.moto.client("s3"), bench.metrics, bench.log)
            switches = switch_times(bench, shared, disk)
            requests = overhead(bench, shared, disk)
            samples, flat, leak = memory(bench, shared, disk, size)
            pristine = shared.switch.pristine_bytes
            del shared
            sdxl = sdxl_switch_times(bench.work)
            text = report(bench, size, settings, switches, requests, (samples, flat, leak), pristine, sdxl)
        finally:
            bench.close()
    print(text)
    if args.out:
        args.out.write_text(text)
    sys.exit(0 if flat and leak >= size else 1)


if __name__ == "__main__":
    main()
