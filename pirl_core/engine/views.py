"""The PIRL views (image, jigsaw, rotation), built for a whole batch at once from cached uint8 images.

* image view v_I: RandomResizedCrop(image_size, scale=(0.08, 1)), flip, colour jitter
  (0.4, 0.4, 0.4, 0.2) with p=0.8, grayscale p=0.2 (augment "photo", the paper's). Augment "scan"
  instead: brightness and contrast jitter (0.4, 0.4) with p=0.8, a gamma curve in [0.7, 1.4] with
  p=0.8, a Gaussian blur (SimCLR's sigma 0.1-2 px at 224 px, scaled to the image) with p=0.5.
* jigsaw view v_It: RandomResizedCrop(jigsaw_size, scale=(0.6, 1)); a 3x3 grid of cells; a
  random patch_size crop in each cell; the same flip/jitter/grayscale per patch,
  independently; the 9 patches shuffled.

At 224 px the sizes are the paper's (255 / 85 / 64); other sizes keep those proportions.
Every crop is one `roi_align` call over the batch (bilinear, anti-aliased by its sampling
grid) and every colour operation is a batched tensor op, so building the 10 views of a
batch costs a small fraction of the network's step, on the CPU as on a GPU. The views are
built on the device the images are on; the random draws are always made on the CPU from the
step's generator, so a GPU run sees the same augmentation as a CPU run.

`part=(offset, total)`: this process builds rows offset .. offset + B of a global batch of
`total` (several processes, engine/distributed.py). Every draw is made for the whole global
batch and sliced, so the union of the processes' views is exactly the one-process batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as nn_f
from torchvision.ops import roi_align

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
N_PATCHES = 9


@dataclass(frozen=True)
class ViewSizes:
    image: int
    jigsaw: int
    cell: int
    patch: int

    @classmethod
    def for_image_size(cls, image_size: int, patch_size: int | None = None) -> ViewSizes:
        jigsaw = round(image_size * 255 / 224)
        cell = jigsaw // 3
        patch = patch_size or round(image_size * 64 / 224)
        if not 8 <= patch <= cell:
            raise ValueError(f"patch size {patch} must be between 8 and the jigsaw cell ({cell} px)")
        return cls(image_size, cell * 3, cell, patch)


def random_boxes(gen: torch.Generator, n: int, height: int, width: int, scale: tuple[float, float],
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop boxes (x1, y1, x2, y2) for n images, vectorised.

    Like torchvision: area fraction uniform in `scale`, log-aspect uniform in `ratio`; a box
    that does not fit is shrunk to fit (torchvision retries, then falls back to a centre crop).
    """
    area = height * width * torch.empty(n).uniform_(scale[0], scale[1], generator=gen)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(1, width)
    h = torch.sqrt(area / aspect).clamp(1, height)
    x1 = torch.rand(n, generator=gen) * (width - w)
    y1 = torch.rand(n, generator=gen) * (height - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


Part = tuple[int, int] | None  # (offset, global batch size) of this process's rows; None: the whole batch


def _share(part: Part, n: int) -> tuple[int, slice]:
    """How many rows to draw for, and which of them are this process's n rows."""
    if part is None:
        return n, slice(None)
    offset, total = part
    return total, slice(offset, offset + n)


def _crop(images: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor, size: int) -> torch.Tensor:
    rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1).to(images.device, images.dtype)
    return roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


# RGB <-> YIQ; a hue shift is a rotation of the IQ plane.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = torch.linalg.inv(_YIQ)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image of x (n, 3, h, w) blurred by a Gaussian of its own sigma (n,) in pixels: one separable,
    grouped convolution for the batch, reflected at the borders."""
    n, c, h, w = x.shape
    radius = max(1, min(math.ceil(3 * float(sigma.max())), (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-t[None] ** 2 / (2 * sigma[:, None].float() ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device, x.dtype)
    y = nn_f.pad(x.reshape(1, n * c, h, w), (radius, radius, 0, 0), mode="reflect")
    y = nn_f.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = nn_f.pad(y, (0, 0, radius, radius), mode="reflect")
    return nn_f.conv2d(y, kernel[:, None, :, None], groups=n * c).reshape(n, c, h, w)


def scan_distort(x: torch.Tensor, gen: torch.Generator, blur_px: float, gamma=(0.7, 1.4), p_gamma: float = 0.8,
                 p_blur: float = 0.5, part: Part = None) -> torch.Tensor:
    """Augment "scan" after flip and brightness/contrast: a gamma curve and a Gaussian blur of up to `blur_px`."""
    n, mine = _share(part, x.shape[0])
    g = torch.empty(n).uniform_(*gamma, generator=gen)
    g = torch.where(torch.rand(n, generator=gen) < p_gamma, g, torch.ones(n))[mine]
    x = x.clamp_min(1e-6) ** g.to(x.device, x.dtype)[:, None, None, None]
    sigma = torch.empty(n).uniform_(0.05 * blur_px, blur_px, generator=gen)
    on = (torch.rand(n, generator=gen) < p_blur)[mine]
    if on.any():
        x = x.clone()
        x[on.to(x.device)] = _blur(x[on.to(x.device)], sigma[mine][on])
    return x


def color_distort(x: torch.Tensor, gen: torch.Generator, jitter=(0.4, 0.4, 0.4, 0.2), p_jitter: float = 0.8,
                  p_gray: float = 0.2, p_flip: float = 0.5, part: Part = None, augment: str = "photo",
                  blur_px: float = 2.0) -> torch.Tensor:
    """Flip, colour jitter and random grayscale, each sample with its own draws. x: float [0, 1].
    augment "scan": flip, brightness and contrast only (hue, saturation and grayscale change nothing on a
    grayscale scan), then scan_distort."""
    if augment == "scan":
        jitter, p_gray = (*jitter[:2], 0.0, 0.0), 0.0
    n, mine = _share(part, x.shape[0])
    here = lambda t: t[mine].to(x.device, t.dtype if t.dtype == torch.bool else x.dtype)  # noqa: E731
    u = lambda lo, hi: here(torch.empty(n, 1, 1, 1).uniform_(lo, hi, generator=gen))  # noqa: E731
    flip = here(torch.rand(n, generator=gen) < p_flip)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)

    b, c, s, h = jitter
    on = here((torch.rand(n, 1, 1, 1, generator=gen) < p_jitter).float())
    brightness, contrast, saturation = u(1 - b, 1 + b), u(1 - c, 1 + c), u(1 - s, 1 + s)
    hue = (torch.empty(n).uniform_(-h, h, generator=gen) * 2 * math.pi)[mine]
    ops = torch.randperm(4, generator=gen).tolist()  # torchvision applies the four in random order
    for op in ops:
        if (op == 2 and s == 0) or (op == 3 and h == 0):  # no saturation or hue change ("scan")
            continue
        if op == 0:
            y = x * brightness
        elif op == 1:
            y = (x - _gray(x).mean((2, 3), keepdim=True)) * contrast + _gray(x).mean((2, 3), keepdim=True)
        elif op == 2:
            y = (x - _gray(x)) * saturation + _gray(x)
        else:
            cos, sin = torch.cos(hue), torch.sin(hue)
            rot = torch.zeros(len(hue), 3, 3)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            m = (_YIQ_INV @ rot @ _YIQ).to(x.device, x.dtype)
            y = torch.einsum("nij,njhw->nihw", m, x)
        x = (on * y + (1 - on) * x).clamp(0, 1)

    if augment == "scan":
        return scan_distort(x, gen, blur_px, part=part)
    gray = here(torch.rand(n, generator=gen) < p_gray)
    return torch.where(gray[:, None, None, None], _gray(x).expand_as(x), x)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (B, 3, H, W) -> float (B, 3, H, W) in [0, 1]."""
    if batch_u8.shape[-1] == 3 and batch_u8.shape[1] != 3:
        batch_u8 = batch_u8.permute(0, 3, 1, 2)
    return batch_u8.float().div_(255)


def image_view(images: torch.Tensor, size: int, gen: torch.Generator,
               scale: tuple[float, float] = (0.08, 1.0), part: Part = None, **distort) -> torch.Tensor:
    """v_I for a batch of float images (B, 3, H, W): normalised (B, 3, size, size).
    `distort` overrides color_distort's strengths (supervised finetuning uses milder ones)."""
    n, _, height, width = images.shape
    total, mine = _share(part, n)
    boxes = random_boxes(gen, total, height, width, scale)[mine]
    return normalize(color_distort(_crop(images, boxes, torch.arange(n), size), gen, part=part, **distort))


def jigsaw_view(images: torch.Tensor, sizes: ViewSizes, gen: torch.Generator,
                scale: tuple[float, float] = (0.6, 1.0), part: Part = None,
                **distort) -> tuple[torch.Tensor, torch.Tensor]:
    """v_It for a batch: normalised patches (B, 9, 3, p, p) in shuffled order, and that order (B, 9).

    The jigsaw crop, its 3x3 cells and the random patch in each cell are composed into one
    box per patch in source coordinates, so the 9B patches come out of a single resample.
    """
    n, _, height, width = images.shape
    total, mine = _share(part, n)
    boxes = random_boxes(gen, total, height, width, scale)[mine]  # the jigsaw crop, resized to sizes.jigsaw
    to_src = (boxes[:, 2:] - boxes[:, :2]) / sizes.jigsaw  # source px per jigsaw px (x, y)
    grid = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"), -1).reshape(9, 2)
    cell_origin = grid.flip(-1).float() * sizes.cell  # (9, 2) as (x, y), row-major cells
    jitter = torch.randint(0, sizes.cell - sizes.patch + 1, (total, 9, 2), generator=gen)[mine].float()
    top_left = boxes[:, None, :2] + (cell_origin[None] + jitter) * to_src[:, None]
    bottom_right = top_left + sizes.patch * to_src[:, None]
    patch_boxes = torch.cat([top_left, bottom_right], -1).reshape(n * 9, 4)
    patches = _crop(images, patch_boxes, torch.arange(n).repeat_interleave(9), sizes.patch)
    patch_part = (9 * part[0], 9 * part[1]) if part else None
    patches = normalize(color_distort(patches, gen, part=patch_part, **distort))
    patches = patches.reshape(n, 9, 3, sizes.patch, sizes.patch)
    order = torch.argsort(torch.rand(total, 9, generator=gen)[mine], dim=1)
    on_device = order.to(images.device)[:, :, None, None, None].expand_as(patches)
    return torch.gather(patches, 1, on_device), order


def rotation_view(images: torch.Tensor, size: int, gen: torch.Generator,
                  scale: tuple[float, float] = (0.08, 1.0), part: Part = None,
                  **distort) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation pretext's transformed view: an image view turned by 90, 180 or 270 degrees.
    Returns the views (B, 3, size, size) and each one's quarter turns k in {1, 2, 3} (counter-clockwise)."""
    views = image_view(images, size, gen, scale, part=part, **distort)
    total, mine = _share(part, views.shape[0])
    turns = torch.randint(1, 4, (total,), generator=gen)[mine]
    out = views.clone()
    for k in (1, 2, 3):
        sel = (turns == k).to(views.device)
        if sel.any():
            out[sel] = torch.rot90(views[sel], k, dims=(2, 3))
    return out, turns


def eval_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """Deterministic view for features and evaluation: resize the whole cached image, normalise."""
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                                 antialias=True, align_corners=False)
    return normalize(images)
