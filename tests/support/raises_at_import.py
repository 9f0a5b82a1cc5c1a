"""A code location that fails at import with something other than an ImportError, for the
warm code server's preload check (tests/warm_code_server/test_warm_code_server.py)."""

raise RuntimeError("this module fails at import on purpose")
