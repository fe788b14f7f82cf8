"""Ingestion: every door (HTTP, MQTT, files, the bus) produces the same Batch for one pipeline."""
