"""Floors: the least a server can do to answer the dashboard query with the same JSON.

Each is a raw ASGI app (no framework) run under uvicorn with the settings migval uses
(one worker, uvloop, httptools). They answer only the dashboard query of bench.query:
the request body is read but not parsed.
"""
