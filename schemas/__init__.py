"""The shape of a Blackboard project: document roots, field kinds, lattices, money,
JSON views and the versioned SQL migrations. Imports nothing of ours."""
