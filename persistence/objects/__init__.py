"""The object store (DESIGN.md section 9): one interface, a folder or S3 behind it,
plus where artifacts live in it and how an export archive is written."""
