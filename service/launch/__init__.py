"""Starting the long-running parts: one API process and the ``serve --processes N`` supervisor, the
arq workers under their restart loop, and ``participants dev`` (embedded servers, demo data, API and
workers in one process). The command line (``service.cli``) parses the arguments and calls in here.

May import ``service.web``, ``service.worker``, ``service.dev``, ``service.core`` and
``service.settings``; never ``service.cli``. Nothing in web, worker or core imports it.
"""
