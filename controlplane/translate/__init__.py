"""Pure translation: (the mesh's model, one proxy) -> its Envoy resources, as plain dicts.
One module per resource kind; :mod:`controlplane.translate.proxy` puts them together.
"""
