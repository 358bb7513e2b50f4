# Builds the .deb with CPack, extracts it and runs the packaged worker --version; checks that
# every shared library it needs comes from a package the .deb depends on.
source "$(dirname "$0")/common.sh"
build=$1 version=$2
dir=$(scratch); trap 'rm -rf "$dir"' EXIT
(cd "$build" && cpack -G DEB -B "$dir/out" >"$dir/cpack.log" 2>&1) || { cat "$dir/cpack.log"; fail "cpack -G DEB failed"; }
deb=$(ls "$dir"/out/autodevs-worker_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no autodevs-worker .deb produced: $(ls "$dir/out")"
ls "$dir"/out/autodevs-worker-sdk_*.deb >/dev/null 2>&1 || fail "no autodevs-worker-sdk .deb produced"
dpkg-deb -x "$deb" "$dir/root"
# Nothing but what runs: stripped binaries (debug info in the -dbgsym package), no build folders.
ls "$dir"/out/autodevs-worker-dbgsym_*.*deb >/dev/null 2>&1 || fail "no autodevs-worker-dbgsym package: $(ls "$dir/out")"
for f in "$dir/root/usr/bin/worker" "$dir"/root/usr/lib/autodevs-worker/plugins/*.so; do
  [ -f "$f" ] || fail "missing $f"
  if readelf -S "$f" | grep -q '\.debug_info'; then fail "$(basename "$f") is not stripped"; fi
done
extra=$(find "$dir"/root/usr/lib/autodevs-worker/plugins -mindepth 1 ! -name '*.so')
[ -z "$extra" ] || fail "the plugins folder holds more than plugins: $extra"
out=$("$dir/root/usr/bin/worker" --version) || fail "packaged worker --version failed"
echo "$out" | grep -q "$version" || fail "worker --version says '$out', expected $version"
[ -f "$dir/root/usr/share/doc/autodevs-worker/copyright" ] || fail "the licence is not packaged as doc/autodevs-worker/copyright"
[ -f "$dir/root/lib/systemd/system/autodevs-worker.service" ] || [ -f "$dir/root/usr/lib/systemd/system/autodevs-worker.service" ] || fail "systemd unit not packaged"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in $(objdump -p "$dir/root/usr/bin/worker" | awk '/NEEDED/{print $2}'); do
  # awk reads to the end: an early exit would SIGPIPE ldconfig, which pipefail turns into a failure.
  path=$(ldconfig -p | awk -v l="$lib" '$1==l && !found {print $NF; found=1}')
  [ -n "$path" ] || fail "$lib not found on this system"
  pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1) || true
  [ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1) || true
  # Sanitizer runtimes belong to the test build's flavour (scripts/test.sh builds with ASan/UBSan),
  # not to the product: a release build does not link them.
  case "$pkg" in libc6|libstdc++6|libgcc-s1|libasan*|libubsan*|liblsan*|libtsan*|"") continue ;; esac
  echo "$depends" | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -qx "$pkg" || fail "worker needs $lib from $pkg, which Depends lacks ($depends)"
done
echo "deb: ok ($(basename "$deb"): $out)"
