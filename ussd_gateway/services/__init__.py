"""The services behind the menus: the actions menu screens call, the SMS keyword
handlers and router, and the package advice. They speak to the backend port and the
session store, never to a channel or the engine."""
