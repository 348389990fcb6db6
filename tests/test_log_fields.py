"""Events about one project carry `project_id` as a field of the JSON log line, not only
in the message text."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import pytest

from blackboard.persistence.compaction_worker import CompactionWorker
from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.errors import ProjectNotFound
from blackboard.persistence.update_log import UpdateLog
from blackboard.web.logs import JsonFormatter
from tests.support.api import eventually


def _json_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if text in r.getMessage()]


async def test_a_missing_project_is_logged_with_its_id(
    store: DocumentStore, caplog: pytest.LogCaptureFixture
) -> None:
    log = UpdateLog(store)
    log.start()
    try:
        with caplog.at_level(logging.ERROR, logger="blackboard.persistence.update_log"):
            with pytest.raises(ProjectNotFound):
                await asyncio.wait_for(log.append("ghost", b"\x01", "t"), 10)
    finally:
        await log.stop(5)
    (line,) = _json_lines(caplog, "missing project")
    assert line["project_id"] == "ghost" and line["level"] == "error"


async def test_a_failed_compaction_is_logged_with_its_project(
    store: DocumentStore, caplog: pytest.LogCaptureFixture
) -> None:
    worker = CompactionWorker(store, timedelta(days=1))
    worker.start()
    try:
        with caplog.at_level(logging.ERROR, logger="blackboard.persistence.compaction_worker"):
            worker.request("ghost")  # no such project: the compaction fails

            def logged() -> None:
                assert len(_json_lines(caplog, "compaction of")) == 1

            await eventually(logged)
    finally:
        await worker.stop()
    (line,) = _json_lines(caplog, "compaction of")
    assert line["project_id"] == "ghost" and "error" in line  # with its traceback
