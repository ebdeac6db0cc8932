"""The durable spool: a journal on disk of every accepted request, until it settles.

- ``_records``: the format (JSON Lines: goal records and acknowledgements) and reading it.
- ``_ownership``: namespaces, ``flock`` ownership of files, taking over orphaned files
  (``adopt``), and looking at a directory (``inspect``, for the command line).
- ``_journal``: ``Journal``, the writer one client owns: ``append``/``ack`` from the event
  loop, a writer thread that writes, fsyncs, rotates and deletes files, the size cap, and the
  spool's own faults; ``hand_over``, one file written at once for requests of a client that
  never started (left unlocked for the next journal of its namespace).

- ``_run_spool``: ``RunSpool``, the client's side for one run: it hands accepted requests to
  the writer, acknowledges them where ``_fate`` settles them, parks and keeps them on disk,
  and reads requests held on disk back (rebuilt by the kind their record's path names).

Nothing here imports the client, the run or the sender. POSIX only (``fcntl.flock``).
"""

from ._journal import Append, Journal, hand_over
from ._ownership import Adoption, FileInfo, adopt, available, inspect, namespace
from ._records import Record
from ._run_spool import MEMORY, SKIP, SPILL, RunSpool, kind_index, record_cost

__all__ = [
    "Adoption",
    "Append",
    "FileInfo",
    "Journal",
    "MEMORY",
    "Record",
    "RunSpool",
    "SKIP",
    "SPILL",
    "adopt",
    "available",
    "hand_over",
    "inspect",
    "kind_index",
    "namespace",
    "record_cost",
]
