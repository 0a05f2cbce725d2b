"""The names a user chooses by: backbones, pretexts, starts. Plain constants, so the command line builds its
argument parser without importing torch (every `pirl` command started in 9 s before; now about 1 s)."""

BACKBONES = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")  # engine/backbones.py REGISTRY, in order
PRETEXTS = ("jigsaw", "rotation", "jigsaw+rotation")
# The views' photometric augmentation: "photo", the paper's (colour jitter and grayscale, chosen for ImageNet
# photographs); "scan", for grayscale scans, where hue, saturation and grayscale change nothing: brightness and
# contrast, a gamma curve and a Gaussian blur (scanners differ in intensity response and sharpness). views.py.
AUGMENTS = ("photo", "scan")
INITS = ("scratch", "imagenet", "pirl", "imagenet+pirl")  # the starts a comparison trains from
