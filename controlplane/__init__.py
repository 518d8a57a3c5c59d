"""The mesh control plane (``meshinject-controlplane``): every proxy's xDS config computed from
what the cluster says, and the mesh CA that gives each pod its certificate over SDS.
"""
