"""terrasnap.controller."""
