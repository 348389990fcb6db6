-- Every appended row also went into this index, keyed by project like the log itself:
-- a group commit over many projects dirtied one more page per project, and the WAL
-- writes each dirty page whole (an append's database work -40%, bench/RESULTS.md).
-- A time lookup now reads the log backwards from its newest row, and pruning goes by
-- the snapshots' times (`persistence.document_store`).
DROP INDEX doc_updates_by_time;
