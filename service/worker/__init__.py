"""The arq workers: job functions (extract, bulk, webhook delivery), the maintenance crons (sweeper,
expiry) and the worker's settings, registered under the names ``service.core`` gives them.

May import ``service.core`` and ``service.settings`` only; the CLI starts it.
"""
