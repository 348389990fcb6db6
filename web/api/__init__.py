"""REST endpoints (DESIGN.md section 5), one module per resource, with their shared
request parsing."""
