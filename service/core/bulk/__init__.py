"""Bulk upload: the streaming CSV parser (``parser``), the staging table and the one transaction that
decides every row (``staging``), and the answer's shape and file names (``summary``).

Part of the core: imports only ``service.core`` and ``service.settings``.
"""
