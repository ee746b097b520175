"""terrasnap.planner."""
