"""The names a user chooses by: backbones, pretexts, starts. Plain constants, so the command line builds its
argument parser without importing torch (every `pirl` command started in 9 s before; now about 1 s)."""

BACKBONES = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")  # engine/backbones.py REGISTRY, in order
PRETEXTS = ("jigsaw", "rotation", "jigsaw+rotation")
INITS = ("scratch", "imagenet", "pirl", "imagenet+pirl")  # the starts a comparison trains from
