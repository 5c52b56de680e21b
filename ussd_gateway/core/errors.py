"""Errors shared across the gateway, in a leaf module to avoid import loops."""

from __future__ import annotations


class BadRequest(ValueError):
    """A request from the wire that we refuse, with a one-line reason for the caller."""


class DependencyDown(RuntimeError):
    """The session store or the subscriber backend cannot answer now; retry later."""


class BackendRefused(RuntimeError):
    """The backend answered, but refused the operation for a business reason that the
    menus do not model (the message is for logs, never for the handset)."""
