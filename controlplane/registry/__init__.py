"""Where the control plane learns the mesh: the cluster's watches (``kube``) or a file of the
same objects (``file``, the sandbox's), both reporting changes to the runtime.
"""
