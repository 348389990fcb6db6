"""Everything live about a project: the wire, the rules, rooms, scale-out, the budget
and lease authority, project creation and import, and the Python client for agents."""
