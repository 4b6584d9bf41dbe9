"""MySQL/MariaDB storage (production), through aiomysql: one server, a MariaDB
Galera cluster, or a primary with read replicas.

* ``store.py`` — :class:`MySQLStore`: where writes and reads go, failover,
  never older than seen, truthful outcomes across a failover (retry, or ask a
  node that can tell).
* ``batches.py`` — writing one batch on one connection: serials under the
  counter row's lock (serial order is commit order), the optimistic paths,
  the batch's marker, finding it again, a job's row.
* ``nodes.py`` — the node list of a storage URL, each node's pools, and what a
  node says of itself (writable, synced or replicating, lag, serial).
* ``sql.py`` — SQL text: packed reads, batches written as literals, the causal read.
* ``schema.py`` — the tables.
"""

from .store import MySQLStore, load_from_config

__all__ = ["MySQLStore", "load_from_config"]
