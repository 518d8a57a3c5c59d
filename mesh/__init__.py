"""The kernel every meshinject program stands on: the contract, errors, settings, annotation
parsing, Envoy resources as plain data, PKI and the one Kubernetes adapter. Imports no program.
"""
