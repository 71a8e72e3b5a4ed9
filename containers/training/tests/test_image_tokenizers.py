"""The tokenizers the Dockerfile bakes into /opt/tokenizers, under the folder names kohya's own
loaders look for: the image's offline check, run here against the pinned sd-scripts with tiny
tokenizers saved under the names the bake uses (the real ones come from the Hub at build time)."""

import os
import re
import subprocess
import sys
from pathlib import Path

from real_models import write_tokenizer

DOCKERFILE = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()


def bake_folders() -> list[str]:
    """The folders the bake writes: each CLIP repo as '/'-> '_', and the T5 tokenizer's."""
    bake = DOCKERFILE[DOCKERFILE.index("from transformers import CLIPTokenizer, T5TokenizerFast") :]
    bake = bake[: bake.index("rm -rf /tmp/huggingface")]
    clip = [repo.replace("/", "_") for repo in re.findall(r"\('([\w.-]+/[\w.-]+)', sys\.argv\[\d\]\)", bake)]
    return clip + re.findall(r"save_pretrained\('/opt/tokenizers/([^']+)'\)", bake)


def offline_check(cache: Path) -> str:
    """The Dockerfile's check, its python -c program, reading `cache` for /opt/tokenizers."""
    line = next(run for run in DOCKERFILE.split("\nRUN ") if "FluxTokenizeStrategy(" in run)
    program = line.replace("\\\n", "").split('python -c "', 1)[1].split('"', 1)[0]
    return program.replace("'/opt/tokenizers'", repr(str(cache)))


def write_t5_tokenizer(folder: Path) -> None:
    """A T5TokenizerFast of a few words (a Unigram model, as T5's sentencepiece vocabulary is)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *((f"\u2581{word}", -1.0) for word in ("a", "dog", "on", "the", "beach"))]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    T5TokenizerFast(tokenizer_object=tokenizer, extra_ids=0, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)


def run_check(sd_scripts, tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    return subprocess.run([sys.executable, "-c", offline_check(cache)], cwd=sd_scripts.folder, env=env, capture_output=True, text=True, timeout=300)


def test_kohya_finds_every_baked_tokenizer_offline_and_the_check_fails_without_one(sd_scripts, tmp_path):
    folders = bake_folders()
    assert folders == ["openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k", "google_t5-v1_1-xxl"]
    cache = tmp_path / "tokenizers"
    for name in folders[:2]:
        write_tokenizer(cache / name)
    write_t5_tokenizer(cache / folders[2])
    done = run_check(sd_scripts, tmp_path, cache)
    assert done.returncode == 0, done.stderr[-2000:]
    # Negative control: without the T5 folder kohya asks the Hub for google/t5-v1_1-xxl, which offline fails.
    os.rename(cache / folders[2], tmp_path / "elsewhere")
    done = run_check(sd_scripts, tmp_path, cache)
    assert done.returncode != 0 and "self.t5xxl = self._load_tokenizer(T5TokenizerFast, T5_XXL_TOKENIZER_ID" in done.stderr
