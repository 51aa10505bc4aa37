"""The worker: a supervisor (`Worker`) and its services, one file each.

claimer.py (claims and starts runs), finisher.py (batched outcomes), leases.py
(heartbeats, cancel requests), rescuer.py (abandoned tasks), waker.py (NOTIFY, retry
timers), progress.py (progress flushes), ticker.py (due schedules become tasks),
registry.py (the worker's row in the worker registry); state.py is what they share, and
supervisor.py starts and stops them.
"""

from nightcrew.worker.supervisor import Worker

__all__ = ["Worker"]
