"""Live updates: WebSocket push of downsampled readings, alerts, anomaly and health changes.

``events`` defines the messages, ``hub`` fans them out to this process's WebSocket clients,
``tap`` turns committed points into per-asset summaries, ``nats_relay`` carries events between
processes when the NATS bus is configured, ``service`` wires them for an API node or a worker,
and ``endpoints`` holds the two WebSocket routes.
"""
