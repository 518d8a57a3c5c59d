"""The local sandbox: a manifest's pods, injected, run on this machine in network namespaces.

``plan`` turns a manifest into pods (pure apart from resolving commands on this machine),
``network`` and ``supervisor`` make them real, ``control`` is what the CLI and the demo call.
"""
