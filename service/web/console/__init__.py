"""The server-rendered web console under ``/console/``: sign-in, site staff pages, operator pages.

An aiohttp sub-app (``app``), mounted by service/web/app.py. Owns: browser sessions and CSRF tokens
(``sessions``), the named routes and who may use each (``routes``), the middlewares that check
sessions, CSRF and the admin flag and turn failures into pages (``guard``), page rendering, links
and security headers (``render``), and the page handlers. May import ``service.core``,
``service.settings`` and the rest of ``service.web``, but never ``service.web.handlers`` (the API's
handlers) nor ``service.worker``. Every action a page offers runs through the core use-cases the
API's handlers call, with the session's user as the caller, so a page can never show or do what
the API would refuse that user.
"""
