"""The only importer of grpcio and xds-protos: the ADS server, and resources to protobuf.
Translation and snapshots know nothing of protobuf; this package converts at the edge.
"""
