"""The click commands `sixview train`, `data`, `adapt`, `convert` and `eval` (loaded lazily by edge.cli)."""
