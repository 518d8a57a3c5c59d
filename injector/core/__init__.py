"""The injector's pure core: whether a pod joins the mesh, what is added, the JSON patch, the
AdmissionReview answer, manifests. No I/O: the webhook and the CLI share every decision here.
"""
