"""X.509 issuance without I/O: CAs and certificates made and read from PEM bytes.
The webhook's serving certificates use it; the mesh CA will too.
"""
