"""terrasnap: reproducible, validated snapshots of geospatial training data in DVC remotes."""

__version__ = "0.1.0"
