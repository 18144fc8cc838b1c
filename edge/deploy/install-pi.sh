#!/usr/bin/env bash
# Install edge-agent as a systemd service on a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit
# or 32-bit) or any Debian-like aarch64/x86_64/armhf host. Safe to run again: every step checks
# first. 64-bit: a venv with the lean wheels (ai-edge-litert, onnxruntime, numpy 2). 32-bit
# (armhf, armv7l CPU: Pi 2/3/4/Zero 2 W): no onnxruntime or ai-edge-litert wheel exists, so the
# venv sees the system's python3-numpy 1.x (--system-site-packages) and gets tflite-runtime 2.14;
# the agent then scores the distance model on the bundle's TFLite twin (distance.tflite).
#
#   sudo ./install-pi.sh [--bundle DIR|FILE.tar.gz] [--config agent.toml] [--package SPEC]
#                        [--no-start]
#
#   --bundle   copy this bundle (from `edge-train fit`) to /var/lib/edge-agent/bundle
#   --config   install this agent.toml as /etc/edge-agent/agent.toml (the old one is kept as
#              agent.toml.bak); without it an existing agent.toml is left alone, and a first
#              install writes a minimal one (broker on localhost, readings on sensors/+/readings)
#   --package  what pip installs into /opt/edge-agent (default: edge-anomaly, the lean device
#              package without extras; a wheel file or a source checkout work too)
#   --no-start enable the service but do not (re)start it
#
# Environment: DRY_RUN=1 prints the commands that change the system instead of running them;
# EDGE_USERLAND (default: dpkg --print-architecture) overrides the userland architecture.
set -euo pipefail

PACKAGE="edge-anomaly"
BUNDLE=""
CONFIG=""
START=1
USER_NAME="edge-agent"
VENV="/opt/edge-agent"
ETC="/etc/edge-agent"
STATE="/var/lib/edge-agent"
UNIT="/etc/systemd/system/edge-agent.service"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DRY_RUN="${DRY_RUN:-0}"

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
say() { printf 'install-pi: %s\n' "$*"; }
die() { printf 'install-pi: error: %s\n' "$*" >&2; exit 1; }
run() {
    if [ "$DRY_RUN" = "1" ]; then printf '+ %s\n' "$*"; else "$@"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE="${2:?--bundle needs a path}"; shift 2 ;;
        --config) CONFIG="${2:?--config needs a path}"; shift 2 ;;
        --package) PACKAGE="${2:?--package needs a spec}"; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) usage 0 ;;
        *) printf 'install-pi: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
done

if [ "$DRY_RUN" != "1" ] && [ "$(id -u)" != "0" ]; then
    die "run as root: sudo $0 $*"
fi
[ -z "$BUNDLE" ] || [ -e "$BUNDLE" ] || die "--bundle $BUNDLE does not exist"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "--config $CONFIG does not exist"

# 1. platform. The userland decides, not the kernel: 32-bit Raspberry Pi OS on a Pi 4 or 5
#    boots a 64-bit kernel (uname -m: aarch64) under a 32-bit Python, so pip runs under
#    `setarch linux32` there (uname -m: armv8l), where pyproject's markers pick tflite-runtime.
ARCH="$(uname -m)"
USERLAND="${EDGE_USERLAND:-$(dpkg --print-architecture 2>/dev/null || echo unknown)}"
BITS32=0
PIP_PREFIX=()
case "$USERLAND/$ARCH" in
    armhf/armv6l|armel/*|*/armv6l)
        die "ARMv6 ($ARCH, $USERLAND: Pi 1, Zero, Zero W): no TFLite runtime has a wheel for it; use a Pi 2, 3, 4, 5 or Zero 2 W" ;;
    armhf/*)
        BITS32=1
        [ "$ARCH" = "armv7l" ] || PIP_PREFIX=(setarch linux32)
        say "32-bit userland ($USERLAND, kernel $ARCH): tflite-runtime with the system numpy; distance scorers on the bundle's TFLite twin" ;;
    */aarch64|*/arm64|*/x86_64) ;;
    *) say "warning: untested architecture $ARCH ($USERLAND)" ;;
esac
command -v python3 >/dev/null || die "python3 is missing: sudo apt-get install python3"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "Python $(python3 -V 2>&1) is too old: 3.10 or newer is needed"
if [ "$BITS32" = "1" ]; then
    python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || die "Python $(python3 -V 2>&1): tflite-runtime 2.14 has 32-bit ARM wheels for Python 3.11 (Bookworm's) only"
fi
missing=()
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ "$BITS32" = "1" ] && ! python3 -c 'import numpy, sys; sys.exit(int(numpy.__version__.split(".")[0]) != 1)' 2>/dev/null; then
    missing+=(python3-numpy)  # numpy 1.x for tflite-runtime 2.14; Bookworm has 1.24
fi
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# 2. a system user without a login, in dialout for the UART
if ! id -u "$USER_NAME" >/dev/null 2>&1; then
    say "creating system user $USER_NAME"
    run useradd --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin "$USER_NAME"
fi
if getent group dialout >/dev/null && ! id -nG "$USER_NAME" 2>/dev/null | grep -qw dialout; then
    run usermod -a -G dialout "$USER_NAME"
fi

# 3. the venv and the lean device package (numpy, ai-edge-litert, onnxruntime, paho-mqtt,
#    pyserial, pydantic: no TensorFlow, no scikit-learn; 32-bit: tflite-runtime, the system numpy)
VENV_OPTIONS=()
[ "$BITS32" = "0" ] || VENV_OPTIONS=(--system-site-packages)
if [ -x "$VENV/bin/python" ] && [ "$BITS32" = "1" ] \
        && ! grep -qs '^include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
    say "recreating $VENV with the system's site packages (numpy 1.x)"
    run rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    run python3 -m venv "${VENV_OPTIONS[@]}" "$VENV"
fi
say "installing $PACKAGE into $VENV"
run "${PIP_PREFIX[@]}" "$VENV/bin/python" -m pip install --quiet --upgrade pip
run "${PIP_PREFIX[@]}" "$VENV/bin/python" -m pip install --quiet --upgrade "$PACKAGE"

# 4. folders: config readable by the service, state writable by it
run install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE"

# 5. config: an explicit --config replaces; otherwise never touch an existing one
if [ -f "$HERE/agent.example.toml" ]; then
    run install -m 0644 "$HERE/agent.example.toml" "$ETC/agent.example.toml"
fi
if [ -n "$CONFIG" ]; then
    if [ -f "$ETC/agent.toml" ] && ! cmp -s "$CONFIG" "$ETC/agent.toml"; then
        run cp -p "$ETC/agent.toml" "$ETC/agent.toml.bak"
    fi
    run install -m 0640 -o root -g "$USER_NAME" "$CONFIG" "$ETC/agent.toml"
elif [ ! -f "$ETC/agent.toml" ]; then
    say "writing a minimal $ETC/agent.toml (every option: $ETC/agent.example.toml)"
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
# edge-agent configuration; every option is documented in $ETC/agent.example.toml
[bundle]
path = "$STATE/bundle"

[mqtt]
host = "localhost"
port = 1883

[[sources]]
type = "mqtt"
topic = "sensors/+/readings"
# A PMS5003 on the Pi's UART instead (see the Pi notes for wiring and enable_uart=1):
# [[sources]]
# type = "serial"
# port = "/dev/serial0"
# device = "pms-1"

[outbox]
path = "$STATE/outbox.sqlite3"

[state]
path = "$STATE/scoring-state.npz"
EOF
    run install -m 0640 -o root -g "$USER_NAME" "$tmp" "$ETC/agent.toml"
    rm -f "$tmp"
fi

# 6. bundle: copied beside the old one, then swapped in, so a failed copy changes nothing
if [ -n "$BUNDLE" ]; then
    say "installing bundle $BUNDLE"
    new="$STATE/bundle.new"
    run rm -rf "$new"
    run install -d -m 0750 -o root -g "$USER_NAME" "$new"
    if [ -d "$BUNDLE" ]; then
        run cp -r "$BUNDLE"/. "$new"/
    else
        run tar -xzf "$BUNDLE" -C "$new"
        # a tarball of the folder itself: use the single folder inside
        if [ "$DRY_RUN" != "1" ] && [ ! -f "$new/manifest.json" ]; then
            inner="$(find "$new" -mindepth 2 -maxdepth 2 -name manifest.json -printf '%h\n' | head -n1)"
            [ -n "$inner" ] || die "$BUNDLE holds no manifest.json"
            mv "$inner" "$STATE/bundle.inner" && rm -rf "$new" && mv "$STATE/bundle.inner" "$new"
        fi
    fi
    run chown -R root:"$USER_NAME" "$new"
    run chmod -R u=rwX,g=rX,o= "$new"
    run rm -rf "$STATE/bundle.old"
    if [ -e "$STATE/bundle" ]; then run mv "$STATE/bundle" "$STATE/bundle.old"; fi
    run mv "$new" "$STATE/bundle"
    run rm -rf "$STATE/bundle.old"
fi

# 7. the unit (from this folder, else from the installed package)
unit_src="$HERE/edge-agent.service"
if [ ! -f "$unit_src" ] && [ -x "$VENV/bin/python" ]; then
    unit_src="$("$VENV/bin/python" -c 'import edge, pathlib; print(pathlib.Path(edge.__file__).parent / "deploy" / "edge-agent.service")')"
fi
[ -f "$unit_src" ] || [ "$DRY_RUN" = "1" ] || die "edge-agent.service not found"
# without a running systemd (a chroot, a container) the unit is installed and enabled only
SYSTEMD=0
if [ -d /run/systemd/system ] || [ "$DRY_RUN" = "1" ]; then SYSTEMD=1; fi
if [ ! -f "$UNIT" ] || ! cmp -s "$unit_src" "$UNIT"; then
    say "installing $UNIT"
    run install -m 0644 "$unit_src" "$UNIT"
    if [ "$SYSTEMD" = "1" ]; then run systemctl daemon-reload; fi
fi
run systemctl enable edge-agent.service

# 8. the service may write only below $STATE (ProtectSystem=strict): warn about an outbox elsewhere
if [ "$DRY_RUN" != "1" ] && [ -x "$VENV/bin/python" ] && [ -f "$ETC/agent.toml" ]; then
    "$VENV/bin/python" - "$ETC/agent.toml" "$STATE" <<'PY' || true
import sys
from pathlib import Path

from edge.config import ConfigError, load_config

try:
    config = load_config(sys.argv[1], environ={})
except ConfigError:
    sys.exit(0)  # check-config below prints the problems
state = Path(sys.argv[2])
if state not in config.outbox.path.parents:
    print(f"install-pi: warning: [outbox] path = {config.outbox.path} is outside {state}, the "
          "only folder the service may write (ProtectSystem=strict); the agent would fail")
if config.state.path is not None and state not in config.state.path.parents:
    print(f"install-pi: warning: [state] path = {config.state.path} is outside {state}; the "
          "agent could not keep its devices' scoring state across restarts")
PY
fi

# 9. check, then start (or restart, to pick up a new bundle, config or package)
if [ "$START" = "1" ]; then
    if [ -e "$STATE/bundle/manifest.json" ] || [ "$DRY_RUN" = "1" ]; then
        run runuser -u "$USER_NAME" -- "$VENV/bin/edge-agent" check-config "$ETC/agent.toml" \
            || die "check-config found problems (above); fix $ETC/agent.toml and run again"
        if [ "$SYSTEMD" = "1" ]; then
            run systemctl restart edge-agent.service
            say "started; follow the log with: journalctl -u edge-agent -f"
        else
            say "systemd is not running here: the service is enabled for the next boot, not started"
        fi
    else
        say "no bundle in $STATE/bundle yet: copy one with --bundle, then: systemctl start edge-agent"
    fi
fi
say "done"
