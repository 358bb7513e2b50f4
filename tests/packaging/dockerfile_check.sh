# What can be checked of the Dockerfile without a Docker engine (none here, and hadolint is not
# in Debian): COPY sources exist, the runtime packages exist in Debian 12, HEALTHCHECK hits
# /healthz, the final USER is not root, the entrypoint forwards signals.
source "$(dirname "$0")/common.sh"
file=$1 root=$2
grep -q '^HEALTHCHECK .*' "$file" || fail "no HEALTHCHECK"
grep -A1 '^HEALTHCHECK' "$file" | grep -q '/healthz' || fail "HEALTHCHECK does not probe /healthz"
user=$(grep -E '^USER ' "$file" | tail -1 | awk '{print $2}')
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || fail "final USER is root or missing"
grep -q '^STOPSIGNAL SIGTERM' "$file" || fail "no STOPSIGNAL SIGTERM"
grep -q '^ENTRYPOINT .*tini' "$file" || fail "no init (tini) to reap handler subprocesses"
# COPY sources (other than --from stages) must exist in the build context.
grep -E '^COPY ' "$file" | grep -v -- '--from=' | while read -r _ src _; do
  [ -e "$root/$src" ] || fail "COPY source $src missing"
done
# Every package of the runtime stage must exist in Debian 12 (a typo breaks the image build).
runtime=$(awk '/^FROM /{n++} n==2' "$file")
pkgs=$(echo "$runtime" | sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' |
  grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -v -E '^(apt-get|install|rm|rf|y|no|recommends|DEBIAN_FRONTEND=noninteractive)$' || true)
[ -n "$pkgs" ] || fail "no runtime packages found"
for p in $pkgs; do
  apt-cache show "$p" >/dev/null 2>&1 || fail "runtime package $p not found in Debian (apt-cache show)"
done
echo "Dockerfile: ok (runtime packages: $(echo $pkgs))"
