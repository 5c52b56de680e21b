"""ussd-gateway: a USSD and short-code self-service server.

The packages are layers; each imports only the ones below it (docs/architecture.md;
tests/test_layers.py checks it):
`cli` → `testkit` → `app` → `channels` → `campaigns` → `dispatch` → `menus` →
`services` → `backend` → `sessions` → `core`.
"""
