"""The MySQL schema: tables and indexes, created idempotently (``addonreg initdb``).

* ``registrations`` has the primary key ``(addon_id, sha256)``: a lookup is one
  index probe. SHA-256 is ``BINARY(32)``; ``addon_id`` is ASCII with a binary
  collation, since ids are compared exactly.
* ``counters`` holds the serial counter: one row, read ``FOR UPDATE`` inside
  every write transaction, so serial order is commit order.
"""

__all__ = ["SCHEMA"]

SCHEMA = [  # registrations: see the package's docstring
    """CREATE TABLE IF NOT EXISTS registrations (
        addon_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        sha256 BINARY(32) NOT NULL,
        version VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        status TINYINT UNSIGNED NOT NULL COMMENT '1 registered, 2 revoked',
        serial BIGINT UNSIGNED NOT NULL,
        updated_at DATETIME(6) NOT NULL COMMENT 'UTC',
        PRIMARY KEY (addon_id, sha256),
        UNIQUE KEY registrations_serial (serial)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS counters (
        name VARCHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,
        value BIGINT UNSIGNED NOT NULL
    ) ENGINE=InnoDB""",
    "INSERT IGNORE INTO counters (name, value) VALUES ('serial', 0)",
    """CREATE TABLE IF NOT EXISTS jobs (
        id CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,
        owner VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
        status VARCHAR(8) CHARACTER SET ascii NOT NULL,
        operations LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
        results LONGTEXT CHARACTER SET utf8mb4 NULL,
        created_at DATETIME(6) NOT NULL,
        KEY jobs_status (status, created_at)
    ) ENGINE=InnoDB""",
    # One row per committed batch, written in the batch's own transaction: after
    # a write node dies mid-commit, another node tells whether the batch
    # committed (store.py, _resolve). Rows older than a day are pruned.
    """CREATE TABLE IF NOT EXISTS batches (
        id BINARY(16) NOT NULL PRIMARY KEY,
        -- per operation: c created, u changed, - the same
        outcome MEDIUMTEXT CHARACTER SET ascii NOT NULL,
        created_at DATETIME(6) NOT NULL,
        KEY batches_created (created_at)
    ) ENGINE=InnoDB""",
]
