"""The fault-test harness: real processes, private backends, faults, and a checker.

* :mod:`tests.faults.proxy` — a TCP link that can pass, stall, be cut and be
  restored (one process's view of a dead network or a hung peer).
* :mod:`tests.faults.servers` — private MariaDB and Redis processes that can
  be killed (``kill -9``), restarted on the same data, paused (``SIGSTOP``)
  and resumed; never the shared ones on 3306/6379.
* :mod:`tests.faults.load` — a bounded mixed load of signed writes and reads
  against ``addonreg serve`` processes, recording every answer.
* :mod:`tests.faults.checker` — what the recorded answers and the database
  must show once a fault has healed.

The scenarios are ``tests/faults/test_*.py``; their fixtures are in
``tests/faults/conftest.py``.
"""

# tests/bus/test_redis.py imports the proxy from here (it was tests/faults.py).
from tests.faults.proxy import TCPProxy

__all__ = ["TCPProxy"]
