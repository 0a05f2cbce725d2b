"""Comparisons of starts, their statistics, neighbours in a run's representation."""
