"""PIRL pretraining as a service: runs, their ranks, pre-run estimates."""
