"""The original PIRL implementation's way of working, step for step, against `pirl pretrain`'s engine, in one
run on one machine (same device, backbone, image size and batch).

What the original does per step (as published; its code is not available here, so this script does the same):
* a DataLoader (32 workers, or the machine's cores if fewer) with per-sample PIL transforms:
  image: Resize 224, ColorJitter(0.4, 0.4, 0.4, 0.4), horizontal and vertical flip, ToTensor, Normalize;
  jigsaw: RandomCrop 255, nine 85 px cells, RandomCrop 64 in each, ColorJitter per patch, shuffled;
* the trunk called once for the image batch and once per patch position (nine calls of B patches);
* the loss in a Python loop over the batch: for each sample 1,000 negatives by `random.sample` from a Python
  list of indices, cosine similarities against rows of a float64 numpy memory bank copied to the device, one
  cross-entropy per sample;
* the numpy bank updated on the CPU every step; SGD lr 0.001.

    python bench/seed_baseline.py                                  # CPU: resnet18, 224 px, batch 32
    python bench/seed_baseline.py --backbone resnet50 --batch 256  # a GPU
"""

from __future__ import annotations

import argparse
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from pirl_core.engine.backbones import build_backbone

N_IMAGES = 2048
NEGATIVES = 1000


class SeedDataset(torch.utils.data.Dataset):
    def __init__(self, images: list[Image.Image]):
        self.images = images
        norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.image_t = T.Compose([T.Resize((224, 224)), T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.RandomHorizontalFlip(),
                                  T.RandomVerticalFlip(), T.ToTensor(), norm])
        self.crop = T.Compose([T.Resize((256, 256)), T.RandomCrop(255)])
        self.patch_t = T.Compose([T.RandomCrop(64), T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.ToTensor(), norm])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        big = self.crop(img)
        patches = [self.patch_t(big.crop((c * 85, r * 85, c * 85 + 85, r * 85 + 85)))
                   for r in range(3) for c in range(3)]
        random.shuffle(patches)
        return i, self.image_t(img), torch.stack(patches)


def seed_steps(backbone: str, batch: int, steps: int, device: torch.device, workers: int) -> float:
    """Images/s of the original's way of working."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(N_IMAGES)]
    loader = torch.utils.data.DataLoader(SeedDataset(images), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    trunk = build_backbone(backbone).to(device)
    image_head = torch.nn.Linear(trunk.dim, 128).to(device)
    patch_head = torch.nn.Linear(trunk.dim, 128).to(device)
    combine = torch.nn.Linear(9 * 128, 128).to(device)
    params = [*trunk.parameters(), *image_head.parameters(), *patch_head.parameters(), *combine.parameters()]
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    bank = rng.standard_normal((N_IMAGES, 128))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    all_indices = list(range(N_IMAGES))
    times = []
    it = iter(loader)
    for _ in range(steps + 2):
        t = time.perf_counter()  # the step includes waiting for the loader
        idx, x, patches = next(it)
        x, patches = x.to(device), patches.to(device)
        f = F.normalize(image_head(trunk(x)), dim=1)
        per_patch = [patch_head(trunk(patches[:, p])) for p in range(9)]  # one trunk call per patch position
        g = F.normalize(combine(torch.cat(per_patch, dim=1)), dim=1)
        loss = 0.0
        for b in range(len(idx)):  # the loss, one sample at a time
            i = int(idx[b])
            negatives = random.sample([k for k in all_indices if k != i], NEGATIVES)
            rows = torch.from_numpy(bank[[i] + negatives]).float().to(device)
            for emb in (f[b], g[b]):
                logits = F.cosine_similarity(emb[None], rows) / 0.07
                loss = loss + 0.5 * F.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long, device=device))
        loss = loss / len(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        new = f.detach().double().cpu().numpy()  # the numpy bank, on the CPU
        for b in range(len(idx)):
            i = int(idx[b])
            bank[i] = 0.5 * bank[i] + 0.5 * new[b]
            bank[i] /= np.linalg.norm(bank[i])
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch / float(np.median(times[2:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    ap.add_argument("--backbone", default="resnet50" if gpu else "resnet18")
    ap.add_argument("--batch", type=int, default=256 if gpu else 32)
    ap.add_argument("--steps", type=int, default=10 if gpu else 4)
    ap.add_argument("--workers", type=int, default=min(32, os.cpu_count() or 1))
    args = ap.parse_args()
    device = torch.device("cuda" if gpu else "cpu")
    from pretrain_throughput import measure  # the engine's PIRL step, in its own process

    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {args.backbone} 224 px, "
          f"batch {args.batch}, {args.workers} loader workers")
    seed = seed_steps(args.backbone, args.batch, args.steps, device, args.workers)
    ours, _ = measure("pirl", args.backbone, 224, None, args.batch, args.steps)
    print(f"  original's way of working  {seed:8.2f} img/s")
    print(f"  pirl pretrain engine       {ours:8.2f} img/s")
    print(f"  engine / original = {ours / seed:.2f}x")


if __name__ == "__main__":
    main()
