"""The server-rendered web console under ``/console/``: sign-in, site staff pages, operator pages.

Owns: browser sessions and CSRF tokens (``sessions``), page rendering and security headers
(``render``), and the page handlers. May import ``service.core``, ``service.settings`` and the rest
of ``service.web``; never ``service.worker``. Every action a page offers runs through the API's own
handlers or the core functions they call, with the session's user as the caller, so a page can
never show or do what the API would refuse that user.
"""
