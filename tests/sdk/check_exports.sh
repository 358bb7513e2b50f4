#!/usr/bin/env bash
# Asserts that a plugin's dynamic symbol table defines exactly wk_plugin_entry_v1 and holds no
# STB_GNU_UNIQUE ("u") symbol, defined or not.
# Usage: check_exports.sh <nm> <plugin.so>
set -euo pipefail
nm_tool=$1
plugin=$2

defined=$("$nm_tool" -D --defined-only "$plugin" | awk '{print $NF}' | sed 's/@.*//' | sort)
if [[ "$defined" != "wk_plugin_entry_v1" ]]; then
  echo "FAIL: $plugin must define exactly wk_plugin_entry_v1 in its dynamic table, found:" >&2
  "$nm_tool" -D --defined-only "$plugin" >&2
  exit 1
fi
unique=$("$nm_tool" -D "$plugin" | awk '$(NF-1) == "u"' || true)
if [[ -n "$unique" ]]; then
  echo "FAIL: $plugin has GNU unique symbols:" >&2
  echo "$unique" >&2
  exit 1
fi
echo "OK: $plugin exports only wk_plugin_entry_v1, no unique symbols"
