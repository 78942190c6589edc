"""Webhooks: the models (``models``), Standard Webhooks signing and retry rules (``rules``), the SQL of
endpoints, messages and attempts (``store``), the transactional outbox (``outbox``) and the SSRF guard
(``ssrf``).

Part of the core: imports only ``service.core`` and ``service.settings`` (and aiohttp's resolver
interfaces, not ``aiohttp.web``).
"""
