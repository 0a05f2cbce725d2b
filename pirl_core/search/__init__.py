"""Vector search over L2-normalised vectors: top-k, near-copies, 2-D maps."""
