"""The mesh control plane (reserved): xDS for every proxy from what the cluster says, and the
mesh CA. Its packages land with the control plane: model, translate, cache, registry, grpc.
"""
