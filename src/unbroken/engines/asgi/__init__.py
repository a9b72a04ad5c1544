"""The ASGI engine (ASGI 3.0): `engine.py` dispatches each scope; `http.py`,
`websocket.py` and `lifespan.py` serve the three scope types; `scope.py` builds them."""
