# Parses the supervisor program with supervisor's own config reader (what supervisord does at
# start-up) and checks what it derives: the command, the process names, the stop settings.
source "$(dirname "$0")/common.sh"
conf=$1
need supervisord supervisor
dir=$(scratch); trap 'rm -rf "$dir"' EXIT
# The real user and log directory exist only on a target host: point them at this one.
sed -e "s#^user=.*#user=$(id -un)#" -e "s#/var/log/autodevs-worker/#$dir/#" "$conf" > "$dir/program.conf"
cat > "$dir/supervisord.conf" <<CONF
[supervisord]
logfile=$dir/supervisord.log
pidfile=$dir/supervisord.pid
[include]
files = $dir/program.conf
CONF
py=$(head -1 "$(command -v supervisord)" | sed "s/^#!//")  # supervisor's own interpreter
"$py" - "$dir/supervisord.conf" <<'PY'
import sys
from supervisor.options import ServerOptions
opts = ServerOptions()
opts.realize(args=["-c", sys.argv[1]])  # exits non-zero with the reason on a bad config
groups = opts.process_group_configs
assert len(groups) == 1, groups
g = groups[0]
assert g.name == "autodevs-worker", g.name
p = g.process_configs[0]
assert p.name == "autodevs-worker-00", p.name
assert p.command.startswith("/usr/bin/worker "), p.command
assert "-worker=autodevs-worker-00" in p.command, p.command
assert p.stopsignal == 15, p.stopsignal
assert p.stopwaitsecs >= 35, "stopwaitsecs must exceed the 30s shutdown timeout"
assert p.environment.get("WORKER_METRICS_ADDR") == "127.0.0.1:9000", p.environment
print("supervisor program: ok:", p.name, "->", p.command)
PY
