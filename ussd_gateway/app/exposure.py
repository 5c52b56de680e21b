"""Secure by default: what the server may expose on the address it is told to bind.

On loopback (the default 127.0.0.1) everything is open, as on a developer's machine.
Beyond loopback, nothing that moves money or shows a subscriber's data answers an
unauthenticated caller: the server refuses to start unless the gateway routes are
protected (tokens, an allow-list or signatures) or the operator opted out in writing
(`[http] allow_unauthenticated = true`). The testers' routes follow the same rule.
"""

from __future__ import annotations

import ipaddress

from ussd_gateway.app.config import ConfigError, Settings
from ussd_gateway.channels.http.guard import GuardPolicy, parse_networks


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; an empty host or 0.0.0.0 means every interface."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve beyond loopback


def admin_on_main(settings: Settings) -> bool:
    """The admin routes share the main listener: no admin listener, and a loopback
    bind or an explicit `[admin] expose_on_main`."""
    return settings.admin.port == 0 and (is_loopback(settings.http.host) or settings.admin.expose_on_main)


def check_exposure(settings: Settings) -> None:
    """Raise ConfigError with what to do when the binds would expose unprotected routes."""
    http, admin = settings.http, settings.admin
    if http.allow_unauthenticated:
        return
    if not is_loopback(http.host) and not (http.tokens or http.allow_from or http.signing_secrets):
        raise ConfigError(
            f"[http] host {http.host!r} is reachable beyond this machine, but the gateway routes (purchases, "
            "subscribers' SMS) would answer anyone: set [http] tokens, allow_from or signing_secrets "
            "(docs/operations.md, production checklist), or allow_unauthenticated = true to accept the risk"
        )
    exposed_admin = (admin.port and not is_loopback(admin.host)) or (admin.port == 0 and admin.expose_on_main and not is_loopback(http.host))
    if exposed_admin and not admin.token:
        raise ConfigError(
            "the admin routes (/sim, /sms/outbound, /menus/graph, /metrics, /admin/...) would be reachable beyond this machine "
            "without a password: set [admin] token, or keep [admin] host on 127.0.0.1"
        )


def guard_policy(settings: Settings) -> GuardPolicy:
    """The middleware's policy from the settings (networks parsed, ConfigError if bad)."""
    try:
        allow_from = parse_networks(settings.http.allow_from, "[http] allow_from")
        trusted = parse_networks(settings.http.trusted_proxies, "[http] trusted_proxies")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return GuardPolicy(
        tokens=settings.http.tokens,
        allow_from=allow_from,
        trusted_proxies=trusted,
        signing_secrets=settings.http.signing_secrets,
        signature_max_age_s=settings.http.signature_max_age_s,
        admin_token=settings.admin.token,
        admin_on_main=admin_on_main(settings),
        peer_requests_per_second=settings.limits.peer_requests_per_second,
    )
