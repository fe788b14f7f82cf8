"""The time-series store: raw points, rollups, latest values and their queries."""
