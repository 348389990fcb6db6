"""The shape of a Blackboard project: document roots, field types, lattices, SQL migrations."""
