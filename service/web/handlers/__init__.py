"""Request handlers, one module per capability: parse the request, authorize through core rules,
call the core, answer. SQL lives in ``service.core``, not here.

May import ``service.core``, ``service.settings`` and the rest of ``service.web``.
"""
