"""The admission webhook (``meshinject serve``): HTTP around the pure review, TLS that follows
its files, the certificate store, metrics. This package only moves bytes.
"""
