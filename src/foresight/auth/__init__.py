"""Users, passwords, tokens, device API keys and the RBAC matrix."""
