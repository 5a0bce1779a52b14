#!/usr/bin/env bash
# Re-fetch the console's vendored browser code: pinned, unmodified release
# files of npm packages, with their licences, into
# src/mocktrade/console/vendor/<package>/. `npm pack` fetches each tarball
# from the npm registry; the tarball's sha512 must match the pin below.
# Needed only to change or check the vendored files: installing and running
# mocktrade need neither npm nor a network.
#
#   scripts/vendor.sh           fetch and (re)write the files
#   scripts/vendor.sh --check   fetch and compare; non-zero if anything differs
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=src/mocktrade/console/vendor
CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1

# package  version  sha512 integrity (from `npm view PKG@VER dist.integrity`)  files (paths in the tarball)
PINS=(
  "phoenix 1.8.16 sha512-bNNJkYBnES2MHo8XjBg6ROK7iU7FeYfkANpTnYzh2ecOipI+8ZF1wiiWdvqv2YfV4MVb9yFJBE2BPF+RXgXXuw== priv/static/phoenix.mjs LICENSE.md"
  "lightweight-charts 5.2.1 sha512-IVwoK1RLFiLPubaKIjNbtjWLnpPMqiABSrTay6whmNa8L1+19292VtHJ+BWyPUuLCwF0tcQlhEWd1CLB2a1nsQ== dist/lightweight-charts.standalone.production.mjs LICENSE"
  "swagger-ui-dist 5.35.0 sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ== swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png LICENSE NOTICE"
  "redoc 3.0.1 sha512-KDfoKaYW19LCl4YStgBnwlaNjYEFfs5zCNt1s1WZ2YM5u8d26Yuzd2l43fZO851ZsgIMe/D640fDJkD8eaRQKQ== bundles/redoc.standalone.js LICENSE"
)

command -v npm >/dev/null || { echo "vendor.sh needs npm (only to fetch; not to run mocktrade)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for pin in "${PINS[@]}"; do
  read -r name version integrity files <<<"$pin"
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  tarball="$work/$name-$version.tgz"
  actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [[ "$actual" != "$integrity" ]]; then
    echo "$name@$version: integrity $actual, pinned $integrity" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar -xzf "$tarball" -C "$work/$name"
  for file in $files; do
    src="$work/$name/package/$file"
    dst="$DEST/$name/$(basename "$file")"
    if ((CHECK)); then
      cmp -s "$src" "$dst" || { echo "differs: $dst" >&2; status=1; }
    else
      mkdir -p "$DEST/$name"
      cp "$src" "$dst"
    fi
  done
  echo "$name@$version ok"
done
exit $status
