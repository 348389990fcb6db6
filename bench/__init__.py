"""Benchmarks of Blackboard, side by side with peer servers where one exists."""
