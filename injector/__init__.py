"""The sidecar injector: the admission webhook, offline inject/check, live inspect/check, the
local sandbox and the ``meshinject`` CLI, all over one pure core (``injector.core``).
"""
