"""Every job kind the worker runs, registered by importing the modules that define them.

Imported by the worker entry point (pirl_core/worker.py) only: the queue (jobs.py) never imports
a job kind, so there is no jobs -> kinds -> jobs import loop.
"""

from . import compare, demo, pretraining  # noqa: F401  (each registers its kinds: finetune, demo_*, pretrain)
