"""Images in: sources, decoding, the image cache, near-copies, splits, datasets."""
