"""The database's clock, for decisions several server instances must agree on (lease and
reservation expiry): their own clocks may be skewed, the database's is one clock."""

from __future__ import annotations

from datetime import datetime

from blackboard.persistence.clock import utc_now
from blackboard.persistence.database import Connection


async def database_now(conn: Connection, dialect: str) -> datetime:
    if dialect == "postgres":
        return await conn.fetchval("SELECT clock_timestamp()")
    # The embedded database lives in this process: its clock is this machine's.
    return utc_now()
