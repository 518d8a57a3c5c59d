#!/usr/bin/env bash
# Prototype: a real Kubernetes control plane on 127.0.0.1, as root, with no
# containers, and a handful of checks that it works; then everything is
# stopped by PID and removed. Flags and the reasons for them: notes.md.
#
# Usage: scripts/cluster/smoke.sh            (binaries from build.sh's cache)
#   SMOKE_BIN=DIR        use binaries from DIR instead
#   SMOKE_PORT_BASE=N    ports N+1..N+5 (default 26000): etcd client, etcd
#                        peer, apiserver, controller-manager, scheduler
#   SMOKE_KEEP=1         keep the temporary dir (logs, certs) for a look
#   SMOKE_KWOK_PODS=N    pods to run on the kwok node (default 20; 0: no kwok)
#
# Exit 0 only if every check passed; the last lines say which did not.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${SMOKE_BIN:-$("$HERE/build.sh" --print-bin)} ||
	{
		echo "smoke.sh: no complete build; run scripts/cluster/build.sh first" >&2
		exit 1
	}
BASE=${SMOKE_PORT_BASE:-26000}
ETCD_PORT=$((BASE + 1)) PEER_PORT=$((BASE + 2)) API_PORT=$((BASE + 3))
KCM_PORT=$((BASE + 4)) SCHED_PORT=$((BASE + 5))
KWOK_PODS=${SMOKE_KWOK_PODS:-20}

# Addresses: only 198.18.0.0/15 (and loopback). The Service range is the
# sandbox's VIP range; pods get a /24 per node out of 198.18.0.0/16, the
# first of which, 198.18.0.0/24, is the sandbox's own pod subnet.
SERVICE_CIDR=198.19.0.0/16
SERVICE_IP=198.19.0.1 # the first address: the `kubernetes` Service
CLUSTER_CIDR=198.18.0.0/16

TMP=$(mktemp -d /tmp/meshinject-smoke.XXXXXX)
mkdir -p "$TMP/pki" "$TMP/logs"
export KUBECONFIG=$TMP/admin.kubeconfig
K() { "$BIN/kubectl" "$@"; }

# ---------------------------------------------------------------- bookkeeping

T0=$(date +%s%N)
ms() { echo $((($(date +%s%N) - T0) / 1000000)); }
say() { printf '[%6.1fs] %s\n' "$(awk "BEGIN{print $(ms)/1000}")" "$*"; }

PIDS=() NAMES=()
FAILED=() PASSED=()
pass() {
	PASSED+=("$1")
	say "PASS: $1"
}
fail() {
	FAILED+=("$1")
	say "FAIL: $1"
}

cleanup() {
	local rc=$? i pid
	# Stopping must finish even if our stdout is gone (`smoke.sh | head`):
	# with SIGPIPE ignored a failed write is only an error, not our death.
	trap '' PIPE
	set +e
	# Stop in reverse start order, each by the PID we started, TERM then KILL.
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid=${PIDS[$i]}
		kill -0 "$pid" 2>/dev/null || continue
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		say "stopped ${NAMES[$i]} (PID $pid)"
	done
	if ((rc != 0 || ${#FAILED[@]})); then
		for f in "$TMP"/logs/*.log; do
			[[ -e $f ]] || continue
			echo "---- tail of $(basename "$f")"
			grep -E '^[EF][0-9]{4}|level=error|"level":"(error|fatal)"|[Ee]rror' "$f" | tail -n 8 || true
		done
	fi
	if [[ ${SMOKE_KEEP:-} == 1 ]]; then
		say "kept $TMP"
	else
		rm -rf "$TMP"
	fi
	echo "${#PASSED[@]} passed, ${#FAILED[@]} failed"
	((${#FAILED[@]} == 0)) || exit 1
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 141' PIPE

start() { # NAME BINARY ARGS... : start in the background, log to logs/NAME.log
	local name=$1
	shift
	"$@" >"$TMP/logs/$name.log" 2>&1 &
	PIDS+=($!)
	NAMES+=("$name")
}

wait_for() { # DESC SECONDS CMD... : poll CMD until it succeeds
	local desc=$1 limit=$2 start i
	shift 2
	start=$(ms)
	while ! "$@" >/dev/null 2>&1; do
		if (($(ms) - start > limit * 1000)); then
			fail "$desc (not within ${limit}s)"
			return 1
		fi
		# A component that died will not become ready: stop waiting.
		for i in "${!PIDS[@]}"; do
			kill -0 "${PIDS[$i]}" 2>/dev/null ||
				{
					fail "$desc: ${NAMES[$i]} exited (see its log)"
					tail -n 20 "$TMP/logs/${NAMES[$i]}.log" >&2
					return 1
				}
		done
		sleep 0.2
	done
	say "$desc ($(($(ms) - start)) ms)"
}

for p in $ETCD_PORT $PEER_PORT $API_PORT $KCM_PORT $SCHED_PORT; do
	if ss -Hltn "sport = :$p" | grep -q .; then
		echo "smoke.sh: port $p is in use; set SMOKE_PORT_BASE" >&2
		exit 1
	fi
done

# ---------------------------------------------------------------- PKI

# EC P-256 everywhere: generating it takes milliseconds, and every component
# accepts it, the service-account signer too (tokens are then ES256).
P=$TMP/pki
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

cert() { # NAME SUBJECT EXTENSIONS : a leaf signed by the CA
	local name=$1 subj=$2 ext=$3
	newkey "$P/$name.key"
	openssl req -new -key "$P/$name.key" -subj "$subj" -out "$P/$name.csr" 2>/dev/null
	openssl x509 -req -in "$P/$name.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" \
		-CAcreateserial -days 2 -out "$P/$name.crt" \
		-extfile <(printf '%s\n' "$ext") 2>/dev/null
}

s=$(ms)
newkey "$P/ca.key"
openssl req -x509 -new -key "$P/ca.key" -subj "/CN=meshinject-smoke-ca" -days 2 \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" -out "$P/ca.crt" 2>/dev/null
CLIENT="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
# The serving cert names every way a client reaches the apiserver: loopback
# from this machine, the Service IP and DNS names from pods.
cert apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
# Users are the certificates' CN, groups their O. system:masters bypasses RBAC
# (admin only); the two components have bootstrap ClusterRoleBindings to
# exactly these user names.
cert admin "/O=system:masters/CN=admin" "$CLIENT"
cert kcm "/CN=system:kube-controller-manager" "$CLIENT"
cert scheduler "/CN=system:kube-scheduler" "$CLIENT"
# What the apiserver presents to kubelets (logs, exec): the sandbox node agent
# will need it; bound to the system:kubelet-api-admin role below.
cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" "$CLIENT"
# The front proxy: the apiserver presents this client cert when it proxies to
# an aggregated API server, which trusts the headers naming the user because
# of it. Nothing here is aggregated, but without a requestheader CA the
# controller-manager and scheduler log an error every few seconds (they read
# it from kube-system/extension-apiserver-authentication). A CA of its own,
# as kubeadm does: a cert from it can claim to be any user.
newkey "$P/front-proxy-ca.key"
openssl req -x509 -new -key "$P/front-proxy-ca.key" -subj "/CN=meshinject-smoke-front-proxy-ca" \
	-days 2 -addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" -out "$P/front-proxy-ca.crt" 2>/dev/null
newkey "$P/front-proxy-client.key"
openssl req -new -key "$P/front-proxy-client.key" -subj "/CN=front-proxy-client" 2>/dev/null |
	openssl x509 -req -CA "$P/front-proxy-ca.crt" -CAkey "$P/front-proxy-ca.key" -CAcreateserial \
		-days 2 -out "$P/front-proxy-client.crt" -extfile <(printf '%s\n' "$CLIENT") 2>/dev/null
# The service-account signing key pair: the apiserver signs tokens with the
# private key and verifies them with the public one; the controller-manager
# signs legacy token Secrets with the private key.
newkey "$P/sa.key"
openssl pkey -in "$P/sa.key" -pubout -out "$P/sa.pub"
say "PKI: 2 CAs, 6 certificates, service-account key pair ($(($(ms) - s)) ms)"

kubeconfig() { # FILE USER : certificates embedded, so the file stands alone
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$P/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$P/$2.crt")
    client-key-data: $(base64 -w0 "$P/$2.key")
contexts:
- name: smoke
  context: {cluster: smoke, user: $2}
current-context: smoke
EOF
}
kubeconfig "$TMP/admin.kubeconfig" admin
kubeconfig "$TMP/kcm.kubeconfig" kcm
kubeconfig "$TMP/scheduler.kubeconfig" scheduler

# ---------------------------------------------------------------- start

# etcd: one member, plain HTTP on loopback only (nothing else can reach it),
# no fsync: a throwaway store for tests, where fsync only costs time.
start etcd "$BIN/etcd" --name smoke --data-dir "$TMP/etcd" \
	--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
	--initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
	--initial-cluster "smoke=http://127.0.0.1:$PEER_PORT" \
	--initial-cluster-state new --unsafe-no-fsync --log-level warn
wait_for "etcd healthy" 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# Advertising 127.0.0.1 is refused by the endpoint reconciler (Endpoints may
# not be loopback), and no other address of this machine reaches the
# apiserver: so no reconciler, and the `kubernetes` Service has no endpoints
# rather than a wrong one.
start kube-apiserver "$BIN/kube-apiserver" \
	--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
	--endpoint-reconciler-type=none \
	--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
	--tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
	--client-ca-file="$P/ca.crt" \
	--authorization-mode=Node,RBAC \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$P/sa.pub" \
	--service-account-signing-key-file="$P/sa.key" \
	--kubelet-client-certificate="$P/apiserver-kubelet-client.crt" \
	--kubelet-client-key="$P/apiserver-kubelet-client.key" \
	--requestheader-client-ca-file="$P/front-proxy-ca.crt" \
	--requestheader-allowed-names=front-proxy-client \
	--requestheader-username-headers=X-Remote-User \
	--requestheader-group-headers=X-Remote-Group \
	--requestheader-extra-headers-prefix=X-Remote-Extra- \
	--proxy-client-cert-file="$P/front-proxy-client.crt" \
	--proxy-client-key-file="$P/front-proxy-client.key" \
	--allow-privileged=true
api_ready() { curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
	"https://127.0.0.1:$API_PORT/readyz"; }
wait_for "kube-apiserver /readyz ok" 90 api_ready

# Started together, as neither needs the other. Single instances: no leader
# election, so they work at once instead of after acquiring a Lease. The
# authn/authz kubeconfigs let them check who calls their own /metrics;
# without them they log warnings and refuse such calls.
start kube-controller-manager "$BIN/kube-controller-manager" \
	--kubeconfig="$TMP/kcm.kubeconfig" \
	--authentication-kubeconfig="$TMP/kcm.kubeconfig" \
	--authorization-kubeconfig="$TMP/kcm.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
	--use-service-account-credentials=true \
	--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
	--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24
start kube-scheduler "$BIN/kube-scheduler" \
	--kubeconfig="$TMP/scheduler.kubeconfig" \
	--authentication-kubeconfig="$TMP/scheduler.kubeconfig" \
	--authorization-kubeconfig="$TMP/scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false
wait_for "kube-controller-manager /healthz ok" 60 curl -sfk "https://127.0.0.1:$KCM_PORT/healthz"
# /healthz is up long before the controllers run (it builds them one by one,
# ~5 s here); the `default` ServiceAccount appearing is the first sign of work.
sa_default() { K -n default get serviceaccount default; }
wait_for "kube-controller-manager controllers running (default/default ServiceAccount)" 60 sa_default
wait_for "kube-scheduler /readyz ok" 60 curl -sfk "https://127.0.0.1:$SCHED_PORT/readyz"
say "control plane up"

# ---------------------------------------------------------------- checks

check() { # DESC CMD... : one check, passed if CMD succeeds
	local desc=$1
	shift
	if "$@" >"$TMP/check.out" 2>&1; then pass "$desc"; else
		fail "$desc"
		sed 's/^/    /' "$TMP/check.out" | tail -n 10
	fi
}

readyz_ok() { [[ $(K get --raw /readyz) == ok ]]; }
check "kubectl get --raw /readyz" readyz_ok
check "kubectl create namespace x" K create namespace x

K create clusterrolebinding smoke-apiserver-kubelet \
	--clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client >/dev/null
K -n x create deployment web --image=registry.k8s.io/pause:3.10 --replicas=2 >/dev/null
rs_made() { [[ -n $(K -n x get rs -l app=web -o name) ]]; }
two_pods() { (($(K -n x get pods -l app=web -o name | wc -l) == 2)); }
wait_for "Deployment -> ReplicaSet" 30 rs_made && pass "the Deployment got a ReplicaSet"
wait_for "ReplicaSet -> 2 Pods (Pending, no node yet)" 30 two_pods && pass "the ReplicaSet got its 2 Pods"

# The serviceaccount controller makes `default` in each namespace; the token
# is issued by TokenRequest, then verified by TokenReview.
sa_made() { K -n x get serviceaccount default; }
wait_for "ServiceAccount x/default made" 30 sa_made
if TOKEN=$(K -n x create token default --duration=10m); then
	pass "kubectl create token (TokenRequest)"
	review=$(K create -o jsonpath='{.status.authenticated} {.status.user.username}' -f - <<EOF
{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "$TOKEN"}}
EOF
	)
	if [[ $review == "true system:serviceaccount:x:default" ]]; then
		pass "TokenReview accepts the token ($review)"
	else fail "TokenReview: $review"; fi
else fail "kubectl create token"; fi

# A Node object with no kubelet behind it: Ready and with room, so the
# scheduler picks it. Its status is sent with the create, and the node
# lifecycle controller would mark it NotReady only after its grace period.
now=$(date -u +%FT%TZ)
K create -f - >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "smoke-node", "labels": {"kubernetes.io/hostname": "smoke-node"}},
 "status": {"capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "198.18.254.1"}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": "$now", "lastTransitionTime": "$now"}]}}
EOF
bound() { [[ $(K -n x get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{" "}{end}') == "smoke-node smoke-node " ]]; }
wait_for "scheduler binds the 2 Pods to smoke-node" 30 bound && pass "the scheduler bound the Pods to the fake Node"
cidr() { [[ $(K get node smoke-node -o jsonpath='{.spec.podCIDR}') == 198.18.* ]]; }
wait_for "node CIDR allocated" 30 cidr &&
	pass "node CIDR allocated: $(K get node smoke-node -o jsonpath='{.spec.podCIDR}')"

# EndpointSlices from a Pod made Ready by hand (the status a kubelet writes).
K -n x expose deployment web --port=80 --target-port=8080 >/dev/null
pod=$(K -n x get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
K -n x patch pod "$pod" --subresource=status --type=merge -p "{\"status\": {
 \"phase\": \"Running\", \"podIP\": \"198.18.254.10\", \"podIPs\": [{\"ip\": \"198.18.254.10\"}],
 \"hostIP\": \"198.18.254.1\", \"startTime\": \"$now\",
 \"conditions\": [{\"type\": \"Ready\", \"status\": \"True\"}, {\"type\": \"ContainersReady\", \"status\": \"True\"}]}}" >/dev/null
slice() { [[ $(K -n x get endpointslices -l kubernetes.io/service-name=web \
	-o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready}{end}') == "198.18.254.10=true" ]]; }
wait_for "EndpointSlice lists the Ready Pod" 30 slice &&
	pass "endpointslice controller: web -> 198.18.254.10 ready ($(K -n x get svc web -o jsonpath='{.spec.clusterIP}'))"

# ---------------------------------------------------------------- kwok

if ((KWOK_PODS > 0)); then
	# kwok manages only nodes with its annotation; its pod IPs come from each
	# node's podCIDR (allocated above), --cidr is the fallback. It renews the
	# node Lease itself (--node-lease-duration-seconds), as a kubelet would.
	start kwok "$BIN/kwok" --kubeconfig="$TMP/admin.kubeconfig" -c "$HERE/kwok-stages.yaml" \
		--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
		--cidr=198.18.255.0/24 --node-ip=198.18.255.254 --node-lease-duration-seconds=40
	K create -f - >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "kwok-node-0", "annotations": {"kwok.x-k8s.io/node": "fake"},
              "labels": {"type": "kwok", "kubernetes.io/hostname": "kwok-node-0"}},
 "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}}
EOF
	node_ready() { [[ $(K get node kwok-node-0 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
	wait_for "kwok node Ready" 60 node_ready && pass "kwok: node Ready"
	K -n x create -f - >/dev/null <<EOF
{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "load"},
 "spec": {"replicas": $KWOK_PODS, "selector": {"matchLabels": {"app": "load"}},
  "template": {"metadata": {"labels": {"app": "load"}},
   "spec": {"nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}}}
EOF
	all_ready() { [[ $(K -n x get deploy load -o jsonpath='{.status.readyReplicas}') == "$KWOK_PODS" ]]; }
	if wait_for "$KWOK_PODS pods on kwok Running/Ready" 120 all_ready; then
		running=$(K -n x get pods -l app=load --field-selector=status.phase=Running -o name | wc -l)
		ips=$(K -n x get pods -l app=load -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' | sort -u | grep -c '^198\.18\.' || true)
		if ((running == KWOK_PODS && ips == KWOK_PODS)); then
			pass "kwok: $running pods Running/Ready, $ips distinct 198.18.x IPs"
		else fail "kwok: $running Running, $ips distinct 198.18.x IPs"; fi
		say "kwok-node-0 podCIDR $(K get node kwok-node-0 -o jsonpath='{.spec.podCIDR}'), first pod IPs: $(K -n x get pods -l app=load -o jsonpath='{.items[*].status.podIP}' | cut -d' ' -f1-3)"
	fi
	lease() { K -n kube-node-lease get lease kwok-node-0; }
	wait_for "kwok keeps the node Lease" 30 lease && pass "kwok: node Lease present"
	# Deleting must go through too (pod-delete stage).
	K -n x delete deploy load --wait=false >/dev/null
	gone() { [[ -z $(K -n x get pods -l app=load -o name) ]]; }
	wait_for "kwok pods deleted" 60 gone && pass "kwok: pods deleted"
fi

say "all checks done; memory (RSS, MB): $(for i in "${!PIDS[@]}"; do
	printf '%s=%d ' "${NAMES[$i]}" $(($(ps -o rss= -p "${PIDS[$i]}" || echo 0) / 1024))
done)"
