# Shared helpers of the packaging checks.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
# Installs Debian packages only when `tool` is missing (the checks run as root in CI). The tests
# hold ctest's RESOURCE_LOCK apt, and apt waits for a dpkg lock held by anything else.
need() {
  local tool=$1; shift
  command -v "$tool" >/dev/null 2>&1 && return 0
  echo "installing $* for $tool"
  if [ "$(id -u)" != 0 ]; then fail "$tool missing and not root: apt-get install $*"; fi
  local wait_lock=(-o DPkg::Lock::Timeout=300)
  (DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get "${wait_lock[@]}" update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends "$@" >/dev/null; }) ||
    fail "cannot install $*"
  command -v "$tool" >/dev/null 2>&1 || fail "$tool still missing after installing $*"
}
scratch() { local d; d=$(mktemp -d /tmp/wk-pkg-XXXXXX); echo "$d"; }
