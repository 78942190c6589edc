"""The core: settings-driven resources (db, storage, redis), the error vocabulary, roles, validation,
audit, and per capability its rules and SQL (participants, directory, jobs, extracts, bulk, webhooks,
accounts: passwords, login throttling, the token-configuration startup check).

May import ``service.settings`` and ``service.core``; never ``aiohttp.web``, ``arq.worker``, nor the
web, worker or dev packages. Both the web side and the worker stand on it.
"""
