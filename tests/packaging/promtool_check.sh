# promtool check metrics on the worker's /metrics text (every family, awkward label values).
source "$(dirname "$0")/common.sh"
sample=$1
need promtool prometheus
out=$("$sample") || fail "metrics sample failed"
echo "$out" | promtool check metrics || fail "promtool rejected the metrics text"
echo "promtool: ok ($(echo "$out" | grep -c '^# TYPE') families)"
