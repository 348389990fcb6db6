"""A project log holding an update that waits for one the log does not have: yrs keeps
its structs aside, and an encoding of the document leaves them out."""

from __future__ import annotations

from pycrdt import Doc, Map

from blackboard.persistence.document_store import DocumentStore
from blackboard.persistence.records import PendingAppend
from tests.test_compaction_fencing import Project


async def log_with_a_held_update(
    store: DocumentStore,
    *,
    editor_wrote_before: bool = True,
    deletion: bool = False,
    rows_after: int = 3,
) -> bytes:
    """Project "film" whose log holds an editor's update that needs `missing` (returned):
    a write into the shot `missing` adds or (`deletion`) that shot's removal, a delete set
    and no struct; after the editor's own earlier update (its clocks then do not start at
    0 in the held one) and before `rows_after` more rows."""
    project = Project(store)
    await project.create()
    author, editor = Doc(client_id=7), Doc(client_id=8)
    author.apply_update(project.doc.get_update())
    with author.transaction():
        author.get("shots", type=Map)["S900"] = Map({"order": 900.0})
    missing = author.get_update(project.doc.get_state())
    editor.apply_update(project.doc.get_update())
    if editor_wrote_before:
        before = editor.get_state()
        editor.get("shots", type=Map)["S901"] = Map({"order": 901.0})
        await store.append([PendingAppend("film", editor.get_update(before), "editor")])
    editor.apply_update(author.get_update())
    before = editor.get_state()
    if deletion:
        del editor.get("shots", type=Map)["S900"]
    else:
        editor.get("shots", type=Map)["S900"]["title"] = "held"
    await store.append([PendingAppend("film", editor.get_update(before), "editor")])
    await project.write(rows_after)
    return missing
