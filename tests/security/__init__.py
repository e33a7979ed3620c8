"""Security: API tokens, roles, modes, and the audit trail, limits and encryption."""
