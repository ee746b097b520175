"""The terrasnap test control plane (see README.md here)."""
