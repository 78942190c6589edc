"""For `make run` and tests: embedded Postgres and Redis servers, and the demo data.

May import ``service.core`` and ``service.settings``; nothing in production imports it.
"""
