"""A real Python 3.9 interpreter (`make py39-test PY39=...`)."""
