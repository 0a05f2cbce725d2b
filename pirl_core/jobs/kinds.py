"""Every job kind the worker runs, registered by importing the modules that define them.

Imported by the worker entry point (jobs/worker.py) only: the queue (jobs/queue.py) never imports
a job kind, so there is no queue -> kinds -> queue import loop.
"""

from .. import demo  # noqa: F401  (demo_*)
from ..data import pacs_pull  # noqa: F401  (pacs_pull)
from ..evaluation import compare  # noqa: F401  (finetune)
from ..labeling import simulate  # noqa: F401  (label_simulation)
from ..training import pretraining  # noqa: F401  (pretrain)
