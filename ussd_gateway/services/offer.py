"""The action of a pushed campaign offer (`menus/definitions/offer.toml`): the package
the push names, as this subscriber would buy it.

Registered into the same `ACTIONS` table as `actions.py` (this module is imported by
the `services` package). The purchase itself is `buy`'s: the offer leads to
`buy:purchase`, whose debit carries the dialogue's idempotency key like any other.
"""

from __future__ import annotations

from ussd_gateway.services.actions import ActionContext, action, held_renewal, package_view


@action
async def offer_package(ctx: ActionContext) -> str:
    """The catalogue package `args.code` (set by the push, e.g. `vars.offer_code`) into
    `pkg`, with the renewal this subscriber would get; outcomes ok, unknown (no such
    package on offer any more)."""
    code = str(ctx.args.get("code") or "")
    package = (await ctx.backend.catalogue()).package(code) if code else None
    if package is None:
        return "unknown"
    renews = held_renewal(await ctx.backend.account(ctx.msisdn)).get(package.code.upper(), True)
    ctx.vars["pkg"] = package_view(ctx, package, renews=renews)
    return "ok"
