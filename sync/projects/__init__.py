"""A project as a whole: creating it, storing its artifacts, and writing or importing its
export archive (DESIGN.md section 9)."""
