"""terrasnap.engine."""
