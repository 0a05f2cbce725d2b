"""Background work: the queue, the worker process, the registered job kinds."""
