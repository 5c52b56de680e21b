"""The server process: configuration, wiring of the layers, the aiohttp application
(HTTP routes, the web phone, the SMPP binds) and sampled live recording."""
