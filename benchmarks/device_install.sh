#!/usr/bin/env bash
# On a CUDA host without network: install the wheels carried from runs/device/load-N folders
# (see benchmarks/device_prepare.py) and this project, then run the device check.
#
#   bash benchmarks/device_install.sh stash runs/device/load-3   # one call per load: copy to /tmp
#   bash benchmarks/device_install.sh run [device-check args]    # join, install, run
#
# Files left in /tmp survive between calls while the machine stays warm (about 30 s).
set -euo pipefail
STASH=/tmp/scorer-wheels
SITE=/tmp/scorer-site

case "${1:-}" in
stash)
  mkdir -p "$STASH"
  cp "$2"/* "$STASH"/
  ls -la "$STASH" | tail -n +2
  ;;
run)
  shift
  cd "$(dirname "$0")/.."
  for first in "$STASH"/*.part-00; do
    [ -e "$first" ] || continue
    whole="${first%.part-00}"
    cat "${whole}".part-* > "$whole"
    rm -f "${whole}".part-*
  done
  mkdir -p "$SITE"
  python -m pip install --quiet --no-deps --no-index --target "$SITE" "$STASH"/*.whl
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  python -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())"
  python -m benchmarks.gpu "$@"
  ;;
*)
  echo "usage: $0 stash DIR | run [args]" >&2
  exit 2
  ;;
esac
