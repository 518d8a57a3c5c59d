#!/usr/bin/env bash
# End to end on a real cluster (kind): build both images, install meshinject, enrol a namespace,
# deploy unmodified apps from the corpus, and prove their pods were injected, became ready, and
# that traffic between them went through both proxies (Envoy's own counters, read through the
# API server's pod proxy).
#
#   scripts/e2e_kind.sh            # creates the kind cluster, deletes it at the end
#   KEEP_CLUSTER=1 scripts/e2e_kind.sh   # leave it running to poke at
#   KIND_CLUSTER=mine scripts/e2e_kind.sh  # reuse an existing kind cluster (never deleted)
#   E2E_GUESTBOOK=0 scripts/e2e_kind.sh    # only nginx + client, not the guestbook
#
# Where Docker (with a running engine), kind or kubectl is missing, it says so and exits 0:
# the machines this project is developed on have no container engine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="${CORPUS:-$ROOT/../shared/corpus/k8s-examples}"
CLUSTER="${KIND_CLUSTER:-meshinject-e2e}"
NS="${E2E_NAMESPACE:-mesh-e2e}"
REQUESTS="${E2E_REQUESTS:-20}"
INJECTOR_IMAGE="ghcr.io/meshinject/meshinject:0.1.0"
INIT_IMAGE="ghcr.io/meshinject/mesh-init:0.1.0"
CLIENT_IMAGE="curlimages/curl:8.11.1"
WEB="_archived_podsecuritypolicy_rbac_pod.yaml"            # a bare nginx Pod
APP="web_guestbook_all-in-one_guestbook-all-in-one.yaml"   # redis-master + frontend (+ replica)
GUESTBOOK="${E2E_GUESTBOOK:-1}"   # 0: skip the three-tier guestbook (its images are old)
CTX="kind-$CLUSTER"
CREATED=0

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIP: %s (the kind e2e runs where Docker runs)\n' "$*"; exit 0; }
k() { kubectl --context "$CTX" "$@"; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
done
docker info >/dev/null 2>&1 || skip "docker has no running engine"
for f in "$WEB" "$APP"; do
  [ -f "$CORPUS/$f" ] || fail "corpus manifest $CORPUS/$f not found (set CORPUS=...)"
done

cleanup() {
  local code=$?
  if [ "$code" -ne 0 ] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    say "diagnostics"
    k get pods -A -o wide || true
    k -n meshinject-system logs deploy/meshinject --tail=50 || true
    k -n "$NS" get events --sort-by=.lastTimestamp | tail -30 || true
  fi
  if [ "$CREATED" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    say "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$code"
}
trap cleanup EXIT

# --- cluster and images ----------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "using existing kind cluster $CLUSTER"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s
  CREATED=1
fi

say "building images"
docker build -q -f "$ROOT/docker/Dockerfile.injector" -t "$INJECTOR_IMAGE" "$ROOT"
docker build -q -f "$ROOT/docker/Dockerfile.init" -t "$INIT_IMAGE" "$ROOT"
PROXY_IMAGE="$(awk '/^ *proxy:/{p=1} p && /image:/{print $2; exit}' "$ROOT/manifests/base/config.yaml")"
[ -n "$PROXY_IMAGE" ] || fail "no proxy image in manifests/base/config.yaml"
docker pull -q "$PROXY_IMAGE" >/dev/null
say "loading $INJECTOR_IMAGE, $INIT_IMAGE, $PROXY_IMAGE into the nodes"
kind load docker-image --name "$CLUSTER" "$INJECTOR_IMAGE" "$INIT_IMAGE" "$PROXY_IMAGE"

# --- install ---------------------------------------------------------------------------------
say "kubectl apply -k manifests/"
k apply -k "$ROOT/manifests/"
k -n meshinject-system rollout status deploy/meshinject --timeout=180s
for _ in $(seq 60); do
  bundles="$(k get mutatingwebhookconfiguration meshinject \
    -o jsonpath='{range .webhooks[*]}{.clientConfig.caBundle}{"\n"}{end}')"
  if [ -n "$bundles" ] && ! grep -qx '' <<<"$bundles"; then break; fi
  sleep 2
done
grep -qx '' <<<"$bundles" && fail "the injector never patched the webhook's caBundle"
nodes="$(k -n meshinject-system get pods -l app.kubernetes.io/name=meshinject \
  -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)"
echo "injector replicas spread over $nodes node(s)"
[ "$nodes" -ge 2 ] || fail "both injector replicas are on one node"

# --- an enrolled namespace with unmodified apps ------------------------------------------------
say "namespace $NS, labelled meshinject.io/inject=enabled"
k create namespace "$NS" --dry-run=client -o yaml | k apply -f -
k label namespace "$NS" meshinject.io/inject=enabled --overwrite
# The API server picks up the patched caBundle within moments; a bare Pod created before then
# would be refused for good (failurePolicy Fail, no controller to retry). A server-side dry run
# goes through the webhook (sideEffects None allows it) without creating anything.
for _ in $(seq 30); do
  if probe="$(k -n "$NS" run webhook-probe --image="$CLIENT_IMAGE" --restart=Never \
      --dry-run=server -o yaml 2>&1)" && grep -q 'name: mesh-proxy' <<<"$probe"; then
    break
  fi
  sleep 2
done
grep -q 'name: mesh-proxy' <<<"$probe" || fail "a server-side dry run in $NS was not injected: $probe"
echo "a server-side dry run in $NS comes back with mesh-init and mesh-proxy"
say "deploying $WEB (unmodified), a Service for it, and a client"
k -n "$NS" apply -f "$CORPUS/$WEB"
k -n "$NS" expose pod nginx --port=80 --dry-run=client -o yaml | k -n "$NS" apply -f -
k -n "$NS" run e2e-client --image="$CLIENT_IMAGE" --restart=Never --dry-run=client -o yaml \
  --command -- sleep 3600 | k -n "$NS" apply -f -
if [ "$GUESTBOOK" = 1 ]; then
  say "deploying $APP (unmodified)"
  k -n "$NS" apply -f "$CORPUS/$APP"
  # the replica's 2015 image is not needed here (the frontend writes to redis-master)
  k -n "$NS" scale deploy/redis-replica --replicas=0
  k -n "$NS" rollout status deploy/redis-master --timeout=300s
  k -n "$NS" rollout status deploy/frontend --timeout=300s
fi
k -n "$NS" wait --for=condition=Ready pod/nginx pod/e2e-client --timeout=300s

# --- assertions: injected and ready ------------------------------------------------------------
say "every pod injected, its proxy ready"
pods="$(k -n "$NS" get pods --field-selector=status.phase=Running -o name | sed 's|pod/||')"
[ -n "$pods" ] || fail "no running pods in $NS"
for pod in $pods; do
  status="$(k -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.meshinject\.io/status}')"
  [ -n "$status" ] || fail "pod $pod has no meshinject.io/status annotation: not injected"
  ready="$(k -n "$NS" get pod "$pod" -o jsonpath='{range .status.initContainerStatuses[?(@.name=="mesh-proxy")]}{.ready}{end}{range .status.containerStatuses[?(@.name=="mesh-proxy")]}{.ready}{end}')"
  [ "$ready" = true ] || fail "pod $pod: mesh-proxy is not ready ($ready)"
  echo "  $pod: injected $status, proxy ready"
done

# --- traffic through both proxies --------------------------------------------------------------
# connections a proxy took in (inbound) or made for its app (outbound), over all its pods
connections() {  # $1 label selector, $2 inbound|outbound
  local total=0 pod n
  for pod in $(k -n "$NS" get pods -l "$1" -o name | sed 's|pod/||'); do
    n="$(k get --raw "/api/v1/namespaces/$NS/pods/$pod:15090/proxy/stats/prometheus" |
      awk -v dir="$2" '$1 ~ /^envoy_(tcp|http)_downstream_cx_total[{]/ && index($1, "prefix=\"" dir) {s += $2}
                       END {printf "%d\n", s}')"
    total=$((total + n))
  done
  echo "$total"
}
fetch() {  # $1 URL, from the client, retried while the app warms up
  k -n "$NS" exec e2e-client -c e2e-client -- \
    curl -fsS -o /dev/null --retry 5 --retry-all-errors --retry-delay 1 "$1"
}

say "$REQUESTS requests client -> nginx"
before="$(connections run=e2e-client outbound)"
for _ in $(seq "$REQUESTS"); do fetch "http://nginx/"; done
client_out=$(( $(connections run=e2e-client outbound) - before ))
nginx_in="$(connections name=nginx inbound)"
printf '  client proxy outbound +%s, nginx proxy inbound %s\n' "$client_out" "$nginx_in"
[ "$client_out" -ge "$REQUESTS" ] || fail "the client's proxy saw $client_out outbound connections"
[ "$nginx_in" -ge "$REQUESTS" ] || fail "nginx's proxy took $nginx_in connections"

if [ "$GUESTBOOK" = 1 ]; then
  say "$REQUESTS requests client -> frontend -> redis-master"
  for i in $(seq "$REQUESTS"); do
    fetch "http://frontend/guestbook.php?cmd=set&key=messages&value=mesh$i"
  done
  front_in="$(connections app=guestbook inbound)"
  front_out="$(connections app=guestbook outbound)"
  redis_in="$(connections role=master inbound)"
  printf '  frontend proxies inbound %s / outbound %s, redis-master proxy inbound %s\n' \
    "$front_in" "$front_out" "$redis_in"
  [ "$front_in" -ge "$REQUESTS" ] || fail "the frontend's proxies took $front_in connections"
  [ "$front_out" -ge 1 ] || fail "the frontend's proxies made no outbound connection (to redis)"
  [ "$redis_in" -ge 1 ] || fail "redis-master's proxy took no connection"
fi

# --- the CLI against the real cluster ----------------------------------------------------------
if [ -x "$ROOT/.venv/bin/meshinject" ]; then
  kubeconfig="$(mktemp)"
  kind get kubeconfig --name "$CLUSTER" >"$kubeconfig"
  say "meshinject inspect -n $NS"
  "$ROOT/.venv/bin/meshinject" inspect -n "$NS" --kubeconfig "$kubeconfig"
  say "meshinject check -n $NS"
  "$ROOT/.venv/bin/meshinject" check -n "$NS" --kubeconfig "$kubeconfig"
  rm -f "$kubeconfig"
fi

say "PASS: injected, ready, and traffic went through both proxies"
