"""Background actors: GPU node lifecycle on EC2, health, scaling with the load (idle
nodes stopped included), queued jobs, the purge of deleted conversations.

Importing this package builds the Redis broker from the environment and
declares every actor, which is what ``portal worker`` (Dramatiq's worker) does.
"""

from dramatiq_actors.broker import make_broker
from edge.settings import Settings

broker = make_broker(Settings.from_env())

from dramatiq_actors import conversations, jobs, lifecycle, maintenance, scaling  # noqa: E402

__all__ = ["broker", "conversations", "jobs", "lifecycle", "maintenance", "scaling"]
