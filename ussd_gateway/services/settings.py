"""The services' own settings (`[services]` in config.toml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Knobs the services need beyond the menus (`[services]`)."""

    kndl_confirm_s: int = 600
    """How long a KNDL `DK` waits for its `XN` (USSD or SMS)."""
    kndl_short_code: str = "9237"
    package_short_code: str = "999"
    sms_sender: str = "MobiFone"
    hotline: str = "9090"
    topup_max_failures: int = 5
    """Wrong scratch-card PINs within `topup_failure_window_s` that lock top-up."""
    topup_failure_window_s: int = 24 * 3600
    topup_lock_s: int = 24 * 3600
    """How long top-up stays locked after the last of those wrong PINs."""
    topup_service_code: str = "*100#"
