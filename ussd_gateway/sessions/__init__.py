"""Session state: one store protocol, an in-memory store and a Redis store."""
