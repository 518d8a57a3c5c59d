"""The local Kubernetes cluster behind ``make cluster-up`` / ``make cluster-down``.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by ``build.sh``) on
127.0.0.1, and meshinject installed from ``manifests/overlays/local``, its injector a process on
this machine. Everything it makes lives in one state directory (``.cluster/`` by default) and is
written to a journal there *before* it is made, so ``down`` can undo it all, also after ``up``
crashed half-way. The modules:

- ``journal``  the append-only record of what was made, and processes started/stopped by PID;
- ``pki``      the CAs, certificates and kubeconfigs;
- ``control``  the control-plane components, their flags and health checks;
- ``install``  the injector: ``kubectl apply -k``, its ServiceAccount token, the host process;
- ``nodes``    the hook for node agents (kwok today; the sandbox's node agent later);
- ``cli``      ``up``, ``down``, ``status``, ``injector start|stop|restart``.

Only the standard library is needed to stop a cluster (``down`` must work with no venv);
``up`` needs ``cryptography`` and ``yaml`` from the project's venv.
"""
