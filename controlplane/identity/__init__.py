"""Who a proxy is: its ServiceAccount token verified (TokenReview, or the sandbox's key) into
a pod and a service account. The mesh CA that signs their certificates lives here too.
"""
