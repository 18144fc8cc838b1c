#!/usr/bin/env bash
# The device install on the Raspberry Pi's architectures, emulated (`make pi-emulated`; not CI:
# an hour or more). As root on a Debian/x86_64 machine:
#
#   1. x86: a wheel of this checkout's HEAD; two bundles fitted here (SKAB valve1/1.csv, rows :400,
#      and a simulated air-quality pod, its clean first fifth); `edge-agent replay` of each
#      file on each bundle with the distance model on onnxruntime and on its TFLite twin.
#   2. per architecture (arm64 = 64-bit Raspberry Pi OS, armhf = 32-bit): a Debian bookworm
#      root (debootstrap) run under qemu-user (binfmt_misc); inside it install-pi.sh installs the
#      wheel exactly as on a Pi (pip resolves the platform's wheels from PyPI; armhf: the system
#      python3-numpy and tflite-runtime, armv7l), runs check-config as the service user, then
#      `edge-agent replay` of the same files with the same bundles.
#      (qemu-user 7.2 passes the host's /proc/cpuinfo through, on which `import onnxruntime`
#      crashes: each root sees a Raspberry Pi 4's instead, see `cpuinfo` below.)
#   3. tests/pi_emulated/compare.py: the alerts must equal the x86 replay's (ids, states, times);
#      scores may differ by the runtimes' arithmetic only; the emulated per-window cost.
#
# Environment: PI_ROOTS (default /var/tmp/edge-pi-roots) keeps the roots between runs,
# PI_ARCHES (default "arm64 armhf"), PI_OUT (default out/pi-emulated), SKAB (default
# ../shared/data/skab/valve1/1.csv), MIRROR (default http://deb.debian.org/debian),
# PI_RUNTIME_arm64 / PI_RUNTIME_armhf: [bundle] distance_runtime in that root (default auto).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROOTS="${PI_ROOTS:-/var/tmp/edge-pi-roots}"
ARCHES="${PI_ARCHES-arm64 armhf}"
OUT="$(mkdir -p "${PI_OUT:-$REPO/out/pi-emulated}" && cd "${PI_OUT:-$REPO/out/pi-emulated}" && pwd)"
SKAB="${SKAB:-$REPO/../shared/data/skab/valve1/1.csv}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
PY="$REPO/.venv/bin/python"
say() { printf '[pi-emulated] %s\n' "$*"; }
die() { printf '[pi-emulated] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = "0" ] || die "run as root (debootstrap, chroot, binfmt_misc)"
[ -x "$PY" ] || die "no $PY: make setup first"
[ -f "$SKAB" ] || die "SKAB file $SKAB not found (set SKAB=...)"

# -- 0. qemu-user through binfmt_misc ----------------------------------------------------------
need=()
for cmd in qemu-aarch64-static:qemu-user-static qemu-arm-static:qemu-user-static \
           debootstrap:debootstrap update-binfmts:binfmt-support; do
    command -v "${cmd%%:*}" >/dev/null || need+=("${cmd##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
update-binfmts --enable qemu-arm >/dev/null 2>&1 || true
for f in qemu-aarch64 qemu-arm; do
    grep -q '^enabled' "/proc/sys/fs/binfmt_misc/$f" 2>/dev/null || die "binfmt_misc has no $f"
done
say "$(qemu-aarch64-static --version | head -n1)"

# -- 1. on x86: the wheel, the bundles, the reference replays -----------------------------------
mkdir -p "$OUT/wheel" "$OUT/data" "$OUT/bundles" "$OUT/x86"
rm -rf "$OUT"/wheel/*.whl "$OUT/src"
mkdir -p "$OUT/src"
git -C "$REPO" archive HEAD | tar -x -C "$OUT/src"  # what is committed, nothing built in the tree
"$PY" -m pip wheel --quiet --no-deps "$OUT/src" -w "$OUT/wheel"
WHEEL="$(basename "$(ls "$OUT"/wheel/edge_anomaly-*.whl)")"
cp "$SKAB" "$OUT/data/skab.csv"
[ -f "$OUT/data/pod.csv" ] || "$REPO/.venv/bin/edge-sim" generate --device airpod \
    --duration 5d --seed 7 --out "$OUT/data/pod.csv" >/dev/null
fit() {  # NAME CSV ROWS
    [ -f "$OUT/bundles/$1/manifest.json" ] && return 0
    say "fitting $1 on x86"
    "$REPO/.venv/bin/edge-train" fit "$2" --out "$OUT/bundles/$1" --rows "$3" --no-report \
        --force >"$OUT/x86/fit-$1.log" 2>&1 || { tail -n 20 "$OUT/x86/fit-$1.log"; die "fit $1"; }
}
fit skab "$OUT/data/skab.csv" ":400"
fit pod "$OUT/data/pod.csv" ":1440"
replay() {  # AGENT(command words) SRV(bundles, data, out as it sees them) HOST_OUT NAME RUNTIME
    local agent="$1" srv="$2" host="$3" name="$4" runtime="$5"
    $agent replay --bundle "$srv/bundles/$name" --input "$srv/data/$name.csv" \
        --out "$srv/out/$name-$runtime.csv" --alerts "$srv/out/$name-$runtime.jsonl" \
        --distance-runtime "$runtime" >"$host/$name-$runtime.txt" 2>&1 \
        || { cat "$host/$name-$runtime.txt"; return 1; }
    sed 's/^/    /' "$host/$name-$runtime.txt"
}
mkdir -p "$OUT/out"
for name in skab pod; do
    for runtime in onnx tflite; do
        say "x86 replay $name ($runtime)"
        replay "$REPO/.venv/bin/edge-agent" "$OUT" "$OUT/x86" "$name" "$runtime"
        mv "$OUT/out/$name-$runtime".* "$OUT/x86/"
    done
done
uname -m >"$OUT/x86/machine.txt"

# -- 2. each emulated root ------------------------------------------------------------------------
mounted=()
cleanup() {
    for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
# qemu-user 7.2 shows emulated programs the host's /proc/cpuinfo (x86: "AuthenticAMD ..."); the
# cpuinfo library in onnxruntime's (and XNNPACK's) start-up parses it as ARM and crashes with
# SIGSEGV inside `import onnxruntime`. The roots get a Raspberry Pi 4's (Cortex-A72) instead,
# bound over /proc/cpuinfo in a private mount namespace; a real Pi has its own.
cpuinfo() {  # ARCH -> a Cortex-A72's /proc/cpuinfo as that architecture's kernel writes it
    local i
    for i in 0 1 2 3; do
        if [ "$1" = "armhf" ]; then
            printf 'processor\t: %s\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\n' "$i"
            printf 'Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n'
            printf 'CPU implementer\t: 0x41\nCPU architecture: 7\n'
        else
            printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\n'
        fi
        printf 'CPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done
    printf 'Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
}
in_root() {  # ROOT COMMAND...
    local root="$1"; shift
    # shellcheck disable=SC2016  # the inner shell expands them
    unshare --mount --propagation private -- /bin/sh -c \
        'mount --bind "$1" "$2/proc/cpuinfo" && shift 2 && exec chroot "$@"' \
        in_root "$root.cpuinfo" "$root" "$root" \
        /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt "$@"
}
for arch in $ARCHES; do
    root="$ROOTS/bookworm-$arch"
    if [ ! -x "$root/usr/bin/python3" ]; then
        say "debootstrap bookworm $arch into $root (a while: its second stage runs emulated)"
        mkdir -p "$ROOTS"
        debootstrap --arch="$arch" --variant=minbase \
            --include=python3,python3-venv,ca-certificates,passwd,systemd,procps \
            bookworm "$root" "$MIRROR" >"$ROOTS/debootstrap-$arch.log" 2>&1 \
            || { tail -n 20 "$ROOTS/debootstrap-$arch.log"; die "debootstrap $arch"; }
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cpuinfo "$arch" >"$root.cpuinfo"
    # this machine's CA bundle for pip in the root (a TLS-inspecting proxy on the way to PyPI)
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$root/etc/ssl/certs/host-ca-certificates.crt"
    for m in proc sys dev; do
        mountpoint -q "$root/$m" || { mount --rbind "/$m" "$root/$m"; mounted+=("$root/$m"); }
    done
    srv="$root/srv/edge"
    rm -rf "$srv" && mkdir -p "$srv/out"
    cp -r "$OUT/wheel" "$OUT/data" "$OUT/bundles" "$srv/"
    cp "$REPO"/edge/deploy/{install-pi.sh,edge-agent.service,agent.example.toml} "$srv/"
    choice="PI_RUNTIME_$arch"
    cat >"$srv/agent.toml" <<EOF
[bundle]
path = "/var/lib/edge-agent/bundle"
distance_runtime = "${!choice:-auto}"

[[sources]]
type = "stdin"

[outbox]
path = "/var/lib/edge-agent/outbox.sqlite3"

[state]
path = "/var/lib/edge-agent/scoring-state.npz"
EOF
    res="$OUT/$arch"
    mkdir -p "$res"
    say "$arch: $(in_root "$root" uname -m), $(in_root "$root" python3 -V)"
    say "$arch: install-pi.sh --package $WHEEL --bundle skab (pip resolves the $arch wheels)"
    started=$(date +%s)
    in_root "$root" bash /srv/edge/install-pi.sh --package "/srv/edge/wheel/$WHEEL" \
        --bundle /srv/edge/bundles/skab --config /srv/edge/agent.toml 2>&1 | tee "$res/install.txt"
    [ "${PIPESTATUS[0]}" = "0" ] || die "$arch: install-pi.sh failed"
    echo "install seconds: $(( $(date +%s) - started ))" >>"$res/install.txt"
    in_root "$root" /opt/edge-agent/bin/python -m pip list --format=freeze >"$res/pip-freeze.txt"
    in_root "$root" runuser -u edge-agent -- /opt/edge-agent/bin/edge-agent check-config \
        /etc/edge-agent/agent.toml | tee "$res/check-config.txt"
    in_root "$root" uname -m >"$res/machine.txt"
    runtime="$(sed -n 's/^  runtime   distance: \([^ ]*\) on .*/\1/p' "$res/check-config.txt")"
    case "$runtime" in distance.onnx) runtime=onnx ;; distance.tflite) runtime=tflite ;;
        *) die "$arch: check-config named no distance runtime" ;; esac
    echo "$runtime" >"$res/runtime.txt"  # what "auto" chose
    rm -f "$res"/*-onnx.* "$res"/*-tflite.* "$res/refused.txt"
    for name in skab pod; do
        for rt in onnx tflite; do  # the other runtime too where the root has it
            say "$arch replay $name ($rt)"
            if replay "in_root $root /opt/edge-agent/bin/edge-agent" /srv/edge "$res" "$name" "$rt"
            then
                cp "$srv/out/$name-$rt".* "$res/"
            elif [ "$rt" != "$runtime" ]; then
                mv "$res/$name-$rt.txt" "$res/refused-$name-$rt.txt"
                say "$arch: --distance-runtime $rt refused, as it must be without its runtime"
            else
                die "$arch: replay $name on $rt failed"
            fi
        done
    done
    cleanup
    mounted=()
done

# -- 3. compare -----------------------------------------------------------------------------------
# shellcheck disable=SC2086  # one argument per architecture
"$PY" "$HERE/compare.py" "$OUT" $ARCHES
