"""The control plane's world as plain values: Services, their endpoints, the workloads whose
proxies connect, and the mesh config. Built by a registry; read by translation. Pure.
"""
