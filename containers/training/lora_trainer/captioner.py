"""BLIP (Salesforce/blip-image-captioning-large, baked into the image at a pinned revision under
/opt/captioner): the captions of the images, from a child process (python -m lora_trainer.captioner),
so all of BLIP's GPU memory is returned before kohya starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .dataset_check import listing
from .errors import TrainingError

# Where the Dockerfile bakes the model; CAPTIONER_INFO records the repo and revision it fetched.
CAPTIONER_DIR = Path(os.environ.get("LORA_CAPTIONER_DIR", "/opt/captioner"))
CAPTIONER_INFO = "captioner.json"
BATCH_SIZE = 8
MAX_NEW_TOKENS = 40


def captioner_info(model_dir: Path) -> dict[str, str]:
    """The model and revision the image baked (the Dockerfile's BLIP_REVISION is the one source)."""
    path = model_dir / CAPTIONER_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return {"model": str(info["model"]), "revision": str(info["revision"])}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TrainingError(f"caption_missing needs the captioning model baked into the image, and {path} is not readable ({error}).") from error


def run_captioner(model_dir: Path, images: Sequence[Path]) -> list[str]:
    """BLIP's caption of each image, from a child process (python -m lora_trainer.captioner)."""
    request = {"model": str(model_dir), "images": [str(image) for image in images]}
    print(f"lora-trainer: captioning {len(images)} image(s) with BLIP from {model_dir}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "lora_trainer.captioner"], input=json.dumps(request), capture_output=True, text=True, env=_child_env(), check=False
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise TrainingError(f"Captioning the images without a caption failed (exit status {done.returncode}): {tail[0]}")
    texts = json.loads(done.stdout)
    blank = [str(image) for image, text in zip(images, texts, strict=True) if not text]
    if blank:
        raise TrainingError(f"BLIP gave no caption for {listing(blank)}; caption these images yourself.")
    return texts


def _child_env() -> dict[str, str]:
    """Offline (the model is baked), and able to import this package wherever it is installed."""
    package_root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONPATH=python_path)


def device_and_dtype() -> tuple[str, Any]:
    """fp16 on a GPU (about 1 GB for BLIP-large), fp32 on a CPU."""
    import torch

    return ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.float32)


def generate(model_dir: Path, images: Sequence[Path]) -> list[str]:
    """Greedy BLIP captions, in batches, fp16 on a GPU (fp32 on a CPU); one line of text each."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    device, dtype = device_and_dtype()
    processor = BlipProcessor.from_pretrained(model_dir)
    # Cast after loading: the image's transformers (4.54.1, sd-scripts' pin) predates from_pretrained's dtype= keyword.
    model = BlipForConditionalGeneration.from_pretrained(model_dir).to(device=device, dtype=dtype).eval()
    texts: list[str] = []
    for start in range(0, len(images), BATCH_SIZE):
        inputs = processor(images=_open_rgb(images[start : start + BATCH_SIZE]), return_tensors="pt").to(model.device, dtype)
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, num_beams=1, do_sample=False)
        texts.extend(" ".join(text.split()) for text in processor.batch_decode(ids, skip_special_tokens=True))
        print(f"lora-captioner: {len(texts)} of {len(images)} image(s) captioned", file=sys.stderr, flush=True)
    return texts


def _open_rgb(paths: Sequence[Path]) -> list[Any]:
    from PIL import Image

    batch = []
    for path in paths:
        with Image.open(path) as opened:
            batch.append(opened.convert("RGB"))
    return batch


def main() -> None:
    """The child process: a JSON request on stdin, the captions as a JSON list on stdout."""
    request = json.loads(sys.stdin.read())
    print(json.dumps(generate(Path(request["model"]), [Path(image) for image in request["images"]])))


if __name__ == "__main__":
    main()
