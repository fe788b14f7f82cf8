"""Notifications: per-tenant channels (Slack, webhook, e-mail), a transactional outbox and the
dispatcher that delivers it at least once, with retries, dead letters, quiet hours and rate
limits."""
