"""What a checkpoint costs against an epoch of training, at the machine's default settings.

A checkpoint re-estimates the BatchNorm statistics on up to 1,024 whole images (engine/batchnorm.py) and writes
the model, optimiser and memory bank. Prints the seconds of one checkpoint, of one epoch of a pool of N images,
and the share of the training time that a checkpoint every epoch would take, against one every
`checkpoint_every_s` (the engine's rule).

    python bench/checkpoint_cost.py                # 768 images (BUSI-sized)
    python bench/checkpoint_cost.py --pool 1800
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import numpy as np

from pirl_core.data.image_cache import cache_size_for
from pirl_core.engine.config import PretrainConfig
from pirl_core.engine.optim import resolve_device
from pirl_core.engine.pretrain import Callbacks, pretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=768, help="unlabeled images")
    ap.add_argument("--steps", type=int, default=4, help="training steps timed")
    args = ap.parse_args()
    config = PretrainConfig.defaults_for("auto")
    side = cache_size_for(config.image_size)
    images = np.random.default_rng(0).integers(0, 256, (args.pool, side, side, 3), dtype=np.uint8)

    class Clock(Callbacks):
        def __init__(self):
            self.steps, self.saved = [], []

        def on_step(self, report):
            self.steps.append(time.perf_counter())

        def on_checkpoint(self, path, step):
            self.saved.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(replace(config, max_steps=args.steps + 1), images, list(range(args.pool)), tmp, clock)
    step = (clock.steps[-1] - clock.steps[0]) / (len(clock.steps) - 1)
    save = clock.saved[-1] - clock.steps[-1]  # the final checkpoint, after the last step
    epoch = step * (args.pool // config.batch_size)
    print(f"{config.backbone} {config.image_size} px, batch {config.batch_size}, {args.pool} images, "
          f"{resolve_device(config.device)}")
    print(f"  one step {step:.2f} s, one epoch {epoch:.1f} s, one checkpoint {save:.1f} s")
    print(f"  a checkpoint every epoch: {save / (epoch + save):.0%} of the training time; "
          f"every {config.checkpoint_every_s:.0f} s: {save / (config.checkpoint_every_s + save):.0%}")


if __name__ == "__main__":
    main()
