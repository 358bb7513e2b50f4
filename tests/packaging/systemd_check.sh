# systemd-analyze verify on the unit, with ExecStart pointed at the built worker.
source "$(dirname "$0")/common.sh"
unit=$1 worker=$2
need systemd-analyze systemd
dir=$(scratch); trap 'rm -rf "$dir"' EXIT
sed "s#^ExecStart=/usr/bin/worker#ExecStart=$worker#" "$unit" > "$dir/autodevs-worker.service"
grep -q "^ExecStart=$worker " "$dir/autodevs-worker.service" || fail "ExecStart does not start /usr/bin/worker"
# verify warns about things that only exist on a real host (the autodevs user, other units);
# those are not errors in the unit. Anything else printed is.
out=$(cd "$dir" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify ./autodevs-worker.service 2>&1) || true
echo "$out"
filtered=$(echo "$out" | grep -v -E "redis-server.service|postgresql.service|network-online.target|Failed to (connect|create).*bus|System has not been booted|No such file or directory.*(redis|postgres)" | grep -v '^$' || true)
[ -z "$filtered" ] || fail "systemd-analyze verify reported problems: $filtered"
# Things the operator guide promises.
for key in 'User=autodevs' 'KillSignal=SIGTERM' 'Restart=always' 'NoNewPrivileges=yes'; do
  grep -q "^$key" "$unit" || fail "unit lacks $key"
done
echo "systemd unit: ok"
