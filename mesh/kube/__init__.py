"""The only importer of the ``kubernetes`` client: API calls that return the server's JSON,
with the client's exceptions translated into :mod:`mesh.errors`.
"""
