"""The services behind the menus: the actions menu screens call, the SMS keyword
handlers and router, and the package advice. They speak to the backend port and the
session store, never to a channel or the engine."""

# The self-care actions and keyword register themselves into the same tables as
# `actions` and `keywords`; importing the package is enough to have all of them.
from ussd_gateway.services import selfcare as _selfcare  # noqa: E402,F401
from ussd_gateway.services import offer as _offer  # noqa: E402,F401
