"""Drives a real tqdm bar the way sd-scripts v0.10.1's train_network.py does, into its stderr, for
tests/test_progress.py: `python kohya_progress_bar.py <epochs> <seconds per step, comma-separated>`.

train_network.py: tqdm(range(max_train_steps), smoothing=0, desc="steps"); per epoch
accelerator.print(f"\\nepoch {n}/{N}\\n"); per step, after the optimizer step, progress_bar.update(1)
and then progress_bar.set_postfix(avr_loss=...). Step k's loss here is 0.1 + k / 100."""

import sys
import time

from tqdm import tqdm

if __name__ == "__main__":
    epochs = int(sys.argv[1])
    seconds = [float(s) for s in sys.argv[2].split(",")]
    per_epoch = len(seconds) // epochs
    print(f"override steps. steps for {epochs} epochs is / 指定エポックまでのステップ数: {len(seconds)}", flush=True)
    bar = tqdm(range(len(seconds)), smoothing=0, desc="steps")
    step = 0
    for epoch in range(epochs):
        print(f"\nepoch {epoch + 1}/{epochs}\n", flush=True)
        for _ in range(per_epoch):
            time.sleep(seconds[step])  # the step's work
            bar.update(1)
            step += 1
            bar.set_postfix(avr_loss=round(0.1 + step / 100, 2))
