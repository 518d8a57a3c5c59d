#!/usr/bin/env bash
# Build the real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl), kube-proxy (for the
# sandbox node) and kwok from their published Go modules, once per version,
# into a cache outside the repository.
#
# Usage: scripts/cluster/build.sh [--background] [--wait [SECONDS]]
#        scripts/cluster/build.sh --print-bin | --stop | --repin
#
#   (no option)      build in the foreground unless already built (or join a
#                    build already running); the last line printed is the bin dir
#   --background     start the build detached (PID file and log in the cache
#                    dir) and return at once; with --wait, then wait for it
#   --wait [SECONDS] wait for the build, a progress line every ~20 s; exit 1 on
#                    a build failure or when SECONDS pass (default: the bound)
#   --stop           stop a running build (it stops all it started)
#   --print-bin      print the bin dir and exit 0 if a complete build is
#                    cached, exit 1 (printing nothing) otherwise; never builds
#   --repin          rewrite go/*/go.mod and go.sum from the versions below
#                    (network needed); run it after changing a version
#
# Environment:
#   MESHINJECT_CACHE          cache root (default ~/.cache/meshinject)
#   MESHINJECT_BUILD_TIMEOUT  seconds; a build running longer kills itself (3000)
#
# A cold build takes about 9 minutes on 2 idle cores, longer when something
# else wants the CPU (figures in notes.md): hence the detached mode, and a
# warm call that costs nothing.
set -euo pipefail

# The one place the versions are pinned. The wrapper modules under go/ must
# agree (checked below); --repin regenerates them from these.
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GODIR=$HERE/go
CACHE_ROOT=${MESHINJECT_CACHE:-$HOME/.cache/meshinject}
BOUND=${MESHINJECT_BUILD_TIMEOUT:-3000}

# How every binary is built; part of the cache key, so changing a flag
# rebuilds. CGO off gives static binaries, as upstream ships them, and spares
# compiling the cgo parts of the standard library. The tags are upstream's for
# release builds (grpcnotrace lets the linker drop x/net/trace). -s -w and
# -trimpath make smaller binaries and a faster link.
KUBE_TAGS=selinux,notest,grpcnotrace
KUBE_LDFLAGS=""
_v=${KUBE_VERSION#v} && _minor=${_v#*.} && _minor=${_minor%%.*}
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	# Without these, `kubectl version` and /version say v0.0.0-master.
	KUBE_LDFLAGS+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitTreeState=clean"
	KUBE_LDFLAGS+=" -X $pkg.gitMajor=${_v%%.*} -X $pkg.gitMinor=$_minor"
done
RECIPE="cgo=0 trimpath ldflags=-s -w tags=$KUBE_TAGS kube-ldflags=$KUBE_LDFLAGS"
KUBE_PKGS=(
	k8s.io/kubernetes/cmd/kube-apiserver
	k8s.io/kubernetes/cmd/kube-controller-manager
	k8s.io/kubernetes/cmd/kube-scheduler
	k8s.io/kubernetes/cmd/kubectl
	k8s.io/kubernetes/cmd/kube-proxy
)
ETCD_PKG=go.etcd.io/etcd/server/v3
KWOK_PKG=sigs.k8s.io/kwok/cmd/kwok

export GOTOOLCHAIN=local # never fetch another toolchain
export GOWORK=off        # a go.work above the repo must not join these modules
export GOFLAGS=-buildvcs=false
export CGO_ENABLED=0

die() {
	echo "build.sh: $*" >&2
	exit 1
}

key_dir() {
	# Keyed by the versions and by a hash of what decides the bytes built: the
	# wrapper modules and the recipe. Must stay cheap: a warm run is only this.
	local sum
	sum=$({
		cat "$GODIR"/kube/go.mod "$GODIR"/kube/go.sum "$GODIR"/etcd/go.mod \
			"$GODIR"/etcd/go.sum "$GODIR"/kwok/go.mod "$GODIR"/kwok/go.sum
		echo "$RECIPE"
	} | sha256sum)
	echo "$CACHE_ROOT/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-${sum:0:12}"
}

check_pins() {
	grep -q "^	k8s.io/kubernetes $KUBE_VERSION\b" "$GODIR/kube/go.mod" ||
		die "go/kube/go.mod does not pin k8s.io/kubernetes $KUBE_VERSION; run build.sh --repin"
	grep -q "^	go.etcd.io/etcd/server/v3 $ETCD_VERSION\b" "$GODIR/etcd/go.mod" ||
		die "go/etcd/go.mod does not pin etcd $ETCD_VERSION; run build.sh --repin"
	grep -q "^	sigs.k8s.io/kwok $KWOK_VERSION\b" "$GODIR/kwok/go.mod" ||
		die "go/kwok/go.mod does not pin kwok $KWOK_VERSION; run build.sh --repin"
}

DIR=$(key_dir)
BIN=$DIR/bin
STAMP=$DIR/stamp
LOG=$DIR/build.log
PIDFILE=$DIR/build.pid
LOCK=$DIR/lock

running() {
	# The builder holds the lock for its whole life; a dead one releases it.
	[[ -e $LOCK ]] && ! flock -n "$LOCK" true
}

done_msg() {
	echo "binaries: $BIN"
	echo "$BIN"
}

# ---------------------------------------------------------------- the build

T0=$SECONDS
say() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*"; }

left() {
	local n=$((BOUND - (SECONDS - T0)))
	((n > 0)) || die "time bound of ${BOUND}s reached"
	echo "$n"
}

# Every step runs as `timeout LEFT env -C DIR CMD...`, started in the
# background and tracked here. timeout puts itself and everything below it
# (go, compile, link) in a process group of its own and kills that group at
# the bound; a signal to the builder (Ctrl-C, `build.sh --stop`) kills those
# groups too, so nothing it started outlives it.
STEPS=()
bounded() { # OUT-FILE ERR-FILE|- DIR CMD... (- : stderr to OUT-FILE too); then wait_steps
	local out=$1 err=$2 dir=$3 lim
	shift 3
	lim=$(left)
	if [[ $err == - ]]; then
		timeout -k 10 "$lim" env -C "$dir" "$@" >"$out" 2>&1 &
	else
		timeout -k 10 "$lim" env -C "$dir" "$@" >"$out" 2>"$err" &
	fi
	STEPS+=($!)
}
wait_steps() { # returns the first non-zero exit status, after all have ended
	local pid rc=0 r
	for pid in "${STEPS[@]}"; do
		r=0
		wait "$pid" || r=$?
		((rc != 0)) || rc=$r
	done
	STEPS=()
	return "$rc"
}
MON=""
# shellcheck disable=SC2317,SC2329  # called from the trap below
stop_steps() {
	local pid
	[[ -z $MON ]] || kill "$MON" 2>/dev/null || true
	for pid in "${STEPS[@]}"; do
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	done
}
trap 'stop_steps; die "interrupted"' INT TERM HUP

# Print a progress line every ~20 s and each binary as it lands, while one
# `go build -v` runs (it prints a package as it starts compiling it).
monitor() {
	local group=$1 vlog=$2 total=$3 out=$4 start=$5
	shift 5
	local seen="" n last=0 b
	while sleep 2 && kill -0 $$ 2>/dev/null; do # $$: the builder, not this subshell
		for b in "$@"; do
			if [[ -e $out/$b && " $seen " != *" $b "* ]]; then
				seen+=" $b"
				say "$group: linked $b ($((SECONDS - start))s into the group)"
			fi
		done
		if ((SECONDS - last >= 20)); then
			last=$SECONDS
			n=$(grep -cv '^go: \|^#' "$vlog" || true)
			say "$group: compiling, $n/$total packages started; linked:${seen:- none yet}"
		fi
	done
}

# build_group NAME MODULE-DIR -o OUT [go build args...] -- BINARY...
build_group() {
	local group=$1 mdir=$2 start=$SECONDS total rc=0
	shift 2
	local args=() bins=()
	while [[ $1 != -- ]]; do
		args+=("$1")
		shift
	done
	shift
	bins=("$@")
	total=$(wc -l <"$WORK/$group.deps")
	say "$group: compiling $total packages (standard library included) and linking ${bins[*]}"
	monitor "$group" "$WORK/$group.v" "$total" "$OUT" "$start" "${bins[@]}" 9>&- &
	MON=$!
	bounded "$WORK/$group.v" - "$mdir" go build -v -trimpath "${args[@]}"
	wait_steps || rc=$?
	kill "$MON" 2>/dev/null || true
	wait "$MON" 2>/dev/null || true
	MON=""
	if ((rc != 0)); then
		grep -v '^[a-z0-9./_-]*$' "$WORK/$group.v" | tail -40 >&2 || true
		((rc == 124)) && die "$group: killed at the time bound of ${BOUND}s"
		die "$group: go build failed (exit $rc)"
	fi
	for b in "${bins[@]}"; do
		[[ -x $OUT/$b ]] || die "$group: $b missing after go build"
	done
	say "$group: done in $((SECONDS - start))s"
	echo "$group=$((SECONDS - start))" >>"$WORK/times"
}

do_build() {
	exec 9>"$LOCK"
	flock -n 9 || die "another build holds $LOCK"
	echo $$ >"$PIDFILE"
	[[ -e $STAMP ]] && {
		say "already built"
		return 0
	}
	check_pins
	command -v go >/dev/null || die "go not found (Go 1.24 or newer is needed)"
	# Partial output is never reused: start from empty every time. Compiled
	# packages survive in GOCACHE, so a retry after a failure is much faster.
	rm -rf "$BIN" "$DIR/bin.partial" "$DIR/work"
	OUT=$DIR/bin.partial
	WORK=$DIR/work
	# go's own scratch dirs too: a killed `go build` leaves its $WORK behind,
	# and here the next build's `rm -rf` above takes it away.
	export GOTMPDIR=$WORK/tmp
	mkdir -p "$OUT" "$WORK" "$GOTMPDIR"
	say "building kube $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION with $(go version | cut -d' ' -f3) on $(nproc) cores into $DIR"
	say "time bound ${BOUND}s; log $LOG"

	# Downloading: `go list -deps` fetches exactly the modules whose packages
	# the binaries import (not the whole module graph, as `go mod download`
	# would) and gives the package counts for the progress lines. The three
	# lists run at once: this step waits on the network, not the CPU.
	say "downloading modules"
	local start=$SECONDS
	bounded "$WORK/kube.deps" "$WORK/kube.dl" "$GODIR/kube" go list -deps -tags "$KUBE_TAGS" "${KUBE_PKGS[@]}"
	bounded "$WORK/etcd.deps" "$WORK/etcd.dl" "$GODIR/etcd" go list -deps "$ETCD_PKG"
	bounded "$WORK/kwok.deps" "$WORK/kwok.dl" "$GODIR/kwok" go list -deps "$KWOK_PKG"
	wait_steps || {
		cat "$WORK"/*.dl >&2
		die "downloading modules failed"
	}
	say "downloaded $(cat "$WORK"/*.dl | grep -c '^go: downloading' || true) modules in $((SECONDS - start))s (GOMODCACHE $(du -sh "$(go env GOMODCACHE)" | cut -f1))"
	echo "download=$((SECONDS - start))" >>"$WORK/times"

	# One `go build` per module, and all five Kubernetes mains in one call so
	# the packages they share (most of them) compile once.
	build_group kube "$GODIR/kube" -o "$OUT/" -tags "$KUBE_TAGS" \
		-ldflags "-s -w $KUBE_LDFLAGS" "${KUBE_PKGS[@]}" \
		-- kube-apiserver kube-controller-manager kube-scheduler kubectl kube-proxy
	build_group etcd "$GODIR/etcd" -o "$OUT/etcd" -ldflags "-s -w" "$ETCD_PKG" -- etcd
	build_group kwok "$GODIR/kwok" -o "$OUT/kwok" -ldflags "-s -w" "$KWOK_PKG" -- kwok

	# Complete: move into place, then the stamp, last of all.
	mv "$OUT" "$BIN"
	{
		cat "$WORK/times"
		echo "total=$((SECONDS - T0))"
		echo "built=$(date -u +%FT%TZ) go=$(go version | cut -d' ' -f3) cores=$(nproc)"
	} >"$STAMP.tmp"
	rm -rf "$WORK"
	say "disk: bin $(du -sh "$BIN" | cut -f1), GOMODCACHE $(du -sh "$(go env GOMODCACHE)" | cut -f1), GOCACHE $(du -sh "$(go env GOCACHE)" | cut -f1)"
	mv "$STAMP.tmp" "$STAMP"
	say "total build time $((SECONDS - T0))s"
}

# ---------------------------------------------------------------- waiting

wait_build() {
	local limit=$1 start=$SECONDS last=$SECONDS line
	while :; do
		if [[ -e $STAMP ]]; then
			grep -E '^\[ *[0-9]+s\] (total|disk|downloaded|[a-z]+: done)' "$LOG" 2>/dev/null || true
			done_msg
			return 0
		fi
		if ! running; then
			echo "build.sh: the build is not running and did not finish; log tail ($LOG):" >&2
			tail -n 30 "$LOG" >&2 2>/dev/null || true
			return 1
		fi
		if ((SECONDS - start >= limit)); then
			echo "build.sh: gave up waiting after ${limit}s (the build goes on, PID $(cat "$PIDFILE" 2>/dev/null)); log tail:" >&2
			tail -n 15 "$LOG" >&2
			return 1
		fi
		if ((SECONDS - last >= 20)); then
			last=$SECONDS
			line=$(grep '^\[' "$LOG" | tail -n 1 || true)
			printf '[wait %4ds] %s\n' $((SECONDS - start)) "${line:-starting}"
		fi
		sleep 2
	done
}

start_background() {
	mkdir -p "$DIR"
	if running; then
		echo "build already running (PID $(cat "$PIDFILE" 2>/dev/null)), log $LOG"
		return 0
	fi
	: >"$LOG"
	setsid nohup bash "$HERE/build.sh" --run-build </dev/null >>"$LOG" 2>&1 &
	echo $! >"$PIDFILE"
	# Return only once the builder holds its lock (or has already died), so a
	# --wait that follows can tell running from failed.
	local _
	for _ in $(seq 50); do
		running || [[ -e $STAMP ]] || ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null && break
		sleep 0.1
	done
	echo "build started in the background (PID $(cat "$PIDFILE")), log $LOG"
}

# ---------------------------------------------------------------- repin

# Regenerate the three wrapper modules from the versions above. The staging
# list comes from k8s.io/kubernetes's own go.mod: every module it replaces
# with ./staging/... and also requires (sample-* are replaced but not
# required, and not published at every tag).
repin() {
	local kmod staging m stage_version
	stage_version=v0.${KUBE_VERSION#v1.}
	kmod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
	[[ -s $kmod ]] || die "could not fetch k8s.io/kubernetes@$KUBE_VERSION's go.mod"
	staging=$(awk '/=> \.\/staging\//{print $1}' "$kmod" | while read -r m; do
		grep -q "^	$m v0.0.0\$" "$kmod" && echo "$m"
	done)
	mkdir -p "$GODIR/kube" "$GODIR/etcd" "$GODIR/kwok"
	rm -f "$GODIR"/{kube,etcd,kwok}/go.sum
	{
		cat <<EOF
// Wrapper module: builds the Kubernetes control plane binaries from the
// published k8s.io/kubernetes module. That module's own go.mod replaces every
// k8s.io/<staging> module with a path inside its git tree (./staging/src/...),
// and a dependency's replace directives are ignored, so
// \`go install k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION\` cannot resolve
// k8s.io/api v0.0.0. Here each staging module it requires points at its
// published $stage_version tag (the same sources, cut from the same release).
//
// Generated by ../../build.sh --repin, which holds the pinned versions.
module meshinject.local/cluster/kube

go 1.26.0

tool (
EOF
		printf '\t%s\n' "${KUBE_PKGS[@]}"
		echo ')'
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo 'replace ('
		for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$stage_version"; done
		echo ')'
	} >"$GODIR/kube/go.mod"
	cat >"$GODIR/etcd/go.mod" <<EOF
// Wrapper module: builds etcd's server binary. go.etcd.io/etcd/server/v3 is
// itself a main package, but its go.mod replaces its sibling modules with
// relative paths (../api, ../pkg, ...), so \`go install ...@version\` refuses
// it; required from a module of our own, those replaces are ignored and the
// siblings resolve to their published versions.
//
// Generated by ../../build.sh --repin, which holds the pinned versions.
module meshinject.local/cluster/etcd

go 1.26.0

tool $ETCD_PKG

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
	cat >"$GODIR/kwok/go.mod" <<EOF
// Wrapper module: builds kwok (fake nodes and pods for scale tests). kwok
// could be \`go install\`ed directly; a module of our own pins the hash of
// every dependency in go.sum, like the other two builds.
//
// Generated by ../../build.sh --repin, which holds the pinned versions.
module meshinject.local/cluster/kwok

go 1.26.0

tool $KWOK_PKG

require sigs.k8s.io/kwok $KWOK_VERSION
EOF
	for m in kube etcd kwok; do
		(cd "$GODIR/$m" && go mod tidy)
	done
	check_pins
	echo "repinned; new cache key: $(key_dir)"
}

# ---------------------------------------------------------------- main

# All in a function, called on the last line: bash reads a script as it
# runs it, and this one runs for minutes; an edit to the file meanwhile must
# not change what the running build does next.
main() {
	local background=0 wait=0 limit=$((BOUND + 60))
	while (($#)); do
		case $1 in
		--background) background=1 ;;
		--wait)
			wait=1
			if [[ ${2:-} =~ ^[0-9]+$ ]]; then
				limit=$2
				shift
			fi
			;;
		--stop)
			if running; then
				kill -TERM "$(cat "$PIDFILE")"
				for _ in $(seq 150); do
					running || break
					sleep 0.1
				done
				running && die "the build (PID $(cat "$PIDFILE")) did not stop"
				echo "build stopped"
			else echo "no build running"; fi
			exit 0
			;;
		--print-bin)
			[[ -e $STAMP ]] || exit 1
			echo "$BIN"
			exit 0
			;;
		--repin)
			repin
			exit 0
			;;
		--run-build) # internal: the detached builder
			do_build
			exit 0
			;;
		-h | --help)
			sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
			exit 0
			;;
		*) die "unknown option $1 (see --help)" ;;
		esac
		shift
	done

	if [[ -e $STAMP ]]; then
		echo "already built: kube $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION"
		done_msg
		exit 0
	fi

	if ((background)); then
		start_background
		((wait)) || exit 0
		wait_build "$limit"
		exit
	fi

	if ((wait)) || running; then
		wait_build "$limit"
		exit
	fi

	# Foreground: the same builder, its output both shown and logged.
	mkdir -p "$DIR"
	: >"$LOG"
	do_build > >(tee -a "$LOG") 2>&1
	done_msg
}

main "$@"
exit
