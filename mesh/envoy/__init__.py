"""Envoy resources as plain dicts (listeners, clusters, routes, HTTP filters) and how Envoy is
run (flags, the drain hook). Pure: what the injector and the control plane hand to Envoy.
"""
