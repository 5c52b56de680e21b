"""The ussd-gateway server."""
