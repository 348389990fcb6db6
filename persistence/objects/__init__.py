"""The object store (DESIGN.md section 9): one interface, a folder or S3 behind it,
and where an artifact's bytes live in it."""
