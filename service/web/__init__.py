"""The HTTP side: the aiohttp app and its typed keys, every route in one list, bearer-token auth,
request parsing, replies, middleware (errors, logs, metrics), the OpenAPI document and the handlers,
one module per capability under ``handlers/``.

May import ``service.core`` and ``service.settings``; never ``service.worker`` (jobs are enqueued by
name) nor ``service.dev``.
"""
