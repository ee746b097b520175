"""terrasnap.api."""
