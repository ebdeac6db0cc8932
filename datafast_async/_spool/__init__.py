"""The durable spool: a journal on disk of every accepted request, until it settles.

- ``_records``: the format (JSON Lines: goal records and acknowledgements) and reading it.
- ``_ownership``: namespaces, ``flock`` ownership of files, taking over orphaned files
  (``adopt``), and looking at a directory (``inspect``, for the command line).
- ``_journal``: ``Journal``, the writer one client owns: ``append``/``ack`` from the event
  loop, a writer thread that writes, fsyncs, rotates and deletes files, the size cap, and the
  spool's own faults.

Nothing here imports the client, the run or the sender: ``datafast_async._durable`` (the
client's side) hands accepted goals to the writer, acknowledges them where the sender settles
them (``_delivered``, ``_give_up``), and reads goals held on disk back. POSIX only
(``fcntl.flock``).
"""

from ._journal import Append, Journal
from ._ownership import Adoption, FileInfo, adopt, available, inspect, namespace
from ._records import Record

__all__ = [
    "Adoption",
    "Append",
    "FileInfo",
    "Journal",
    "Record",
    "adopt",
    "available",
    "inspect",
    "namespace",
]
