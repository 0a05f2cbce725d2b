"""Finetuned models out: bundles, their signatures, predictions."""
