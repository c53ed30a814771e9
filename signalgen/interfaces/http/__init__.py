"""The HTTP service: one ASGI app, one port. Routers live in their own modules."""
