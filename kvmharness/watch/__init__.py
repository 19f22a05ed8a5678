"""Watching a fleet's migratability over QMP (issue 26): fleet.py measures,
render.py shows, metrics.py exports to Prometheus."""
