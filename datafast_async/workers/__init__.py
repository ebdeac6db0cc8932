"""Integrations with async task workers and sync task queues, one module per library:
``datafast_async.workers.arq``, ``.taskiq``, ``.celery``, ``.dramatiq``.

None of those libraries is a dependency of the package: each module imports its library only
when it is imported itself, and says which extra to install when the library is missing.
"""
