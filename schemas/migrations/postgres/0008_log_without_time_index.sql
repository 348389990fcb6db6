-- No query uses it any more (a time lookup reads the log backwards from its newest
-- row, pruning goes by the snapshots' times: `persistence.document_store`), and every
-- appended row paid for it.
DROP INDEX doc_updates_by_time;
