"""A project as a whole: creating it, storing its artifacts (DESIGN.md section 9), and
importing an export archive as a new project."""
