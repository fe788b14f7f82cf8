"""Domain-free building blocks: database base, errors, pagination, time helpers, logging."""
