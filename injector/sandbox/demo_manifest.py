"""The demo's manifest: three ordinary Deployments and Services, as a user would write them.

Nothing in it mentions Envoy or iptables. The namespace carries the opt-in label; each
Deployment runs as its own service account (its SPIFFE identity); ``catalog`` has two replicas,
both reached by the frontend's one keep-alive connection to it; every pod asks its proxy for
access logs (off by default), which the demo reads to show who called whom;
the frontend carries two more annotations asking its proxy to retry failed calls (``5xx``),
which is what hides the ``reviews`` service's flakiness (every fifth request answers 503) from
the frontend's code.
The app commands are this package's ``demo_app`` module, run by ``python3`` from meshinject's
own environment (the sandbox puts it first on every container's PATH).
"""

from __future__ import annotations

from typing import Any

import yaml

NAMESPACE = "demo"
ENTRY = "frontend"  # the Service the demo's traffic goes to
FLAKY = "reviews"
BALANCED = "catalog"  # two replicas, which the frontend calls over one keep-alive connection
FAIL_EVERY = 5

_APP = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: demo, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}{annotations}
    spec:
      serviceAccountName: {name}
      securityContext: {{runAsUser: 1000, runAsGroup: 1000}}
      containers:
      - name: {name}
        image: example.com/demo/{name}:1.0
        command: [python3, -m, injector.sandbox.demo_app]
        args: [{args}]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""

_ACCESS_LOG = """
      annotations:
        proxy.meshinject.io/access-log: "on\""""
_RETRIES = _ACCESS_LOG + """
        proxy.meshinject.io/retries: "3"
        proxy.meshinject.io/retry-on: "5xx,connect-failure\""""

MANIFEST = (
    "apiVersion: v1\nkind: Namespace\n"
    "metadata: {name: demo, labels: {meshinject.io/inject: enabled}}\n"
    + _APP.format(
        name="frontend", annotations=_RETRIES, replicas=1,
        args="frontend, --call=catalog=catalog:80/items, --call=reviews=reviews:80/reviews",
    )
    + _APP.format(name=BALANCED, annotations=_ACCESS_LOG, replicas=2,
                  args=f"backend, --name={BALANCED}")
    + _APP.format(name=FLAKY, annotations=_ACCESS_LOG, replicas=1,
                  args=f"backend, --name={FLAKY}, --fail-every={FAIL_EVERY}")
)


def documents() -> list[Any]:
    return [doc for doc in yaml.safe_load_all(MANIFEST) if doc is not None]
