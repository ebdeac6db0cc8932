"""The sender, in rooms of one job each.

- ``_sender``: ``Sender``, the worker loop and the one next-step decision after an attempt;
- ``_workers``: the watched workers (spawned, woken, replaced when one dies, stopped);
- ``_schedule``: the retry schedule (requests waiting to retry, one timer);
- ``_gate``: the circuit in front of the sender (open: fail or park; half-open: one probe);
- ``_refill``: pacing the spool's read-back;
- ``_job``: one request on its way.
"""

from ._job import Job
from ._sender import Sender

__all__ = ["Job", "Sender"]
