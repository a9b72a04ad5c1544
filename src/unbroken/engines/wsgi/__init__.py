"""The WSGI engine (PEP 3333): `engine.py` runs requests inline or in threads (its
rules), `request.py` is one request on its thread, `environ.py` builds the environ,
`streams.py` holds the blocking objects (the body, the write gate, the file wrapper)
that the application's thread reads and writes."""
