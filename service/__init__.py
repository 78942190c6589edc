"""The participants service: an OpenClinica 4-compatible participant API.

``core/`` holds the rules and their SQL, ``web/`` the HTTP side, ``worker/`` the arq jobs, ``dev/``
the embedded servers and demo data, ``sql/`` the migrations; ``settings.py`` and ``cli.py`` sit on
top. tests/test_layout.py holds every package to what its docstring says it may import.
"""
