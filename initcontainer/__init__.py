"""mesh-init (``meshinject-init``): the pod's init container that captures its TCP traffic into
the proxy with iptables (and TPROXY routing). It imports neither the injector nor the kernel;
its ``config`` module is the seam both sides read."""
