#!/usr/bin/env bash
# Install the peer brokers used by benchmarks/compare.py (run by hand, as root; never from CI).
#   - RabbitMQ (Debian package; its MQTT and STOMP plugins ship in the same package)
#   - Mosquitto (Debian package)
#   - amqtt's broker (PyPI, into the project venv; usually already there)
# Idempotent and non-interactive: re-running only installs what is missing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BENCH_VENV:-$(cd "$HERE/.." && pwd)/.venv}"
export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)

if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "install_peers: apt-get install ${need_apt[*]}"
    $SUDO apt-get update
    # policy-rc.d 101 keeps the package scripts from trying to start services
    # (there is no init system in the sandbox; compare.py starts the peers itself).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $SUDO apt-get install -y --no-install-recommends "${need_apt[@]}"
else
    echo "install_peers: rabbitmq-server and mosquitto already installed"
fi

if [ -x "$VENV/bin/amqtt" ]; then
    echo "install_peers: amqtt already in $VENV"
else
    echo "install_peers: pip install amqtt into $VENV"
    "$VENV/bin/python" -m pip install amqtt
fi

# The Debian package may have left a running epmd or broker only if an init system exists;
# nothing to stop here.
echo "install_peers: done"
for b in rabbitmq-server mosquitto; do
    printf '  %-16s %s\n' "$b" "$(command -v $b || ls /usr/sbin/$b 2>/dev/null || echo MISSING)"
done
printf '  %-16s %s\n' amqtt "$(ls "$VENV/bin/amqtt" 2>/dev/null || echo MISSING)"
