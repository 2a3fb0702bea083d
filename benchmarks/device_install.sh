#!/usr/bin/env bash
# On a CUDA host without network: join the loads carried from runs/device/load-N (see
# benchmarks/device_prepare.py), unpack them onto PYTHONPATH, then run the device check.
#
#   bash benchmarks/device_install.sh stash runs/device/load-3   # one call per load: copy to /tmp
#   bash benchmarks/device_install.sh run [device-check args]    # join, unpack, run
#   bash benchmarks/device_install.sh exec CMD [ARGS...]          # join, unpack, run CMD there
#
# Files left in /tmp survive between calls while the machine stays warm (about 30 s). The run
# call carries runs/device/data (the reference reviews, which live outside the checkout) and may
# carry the last load itself.
set -euo pipefail
STASH=/tmp/scorer-stash
SITE=/tmp/scorer-site

case "${1:-}" in
stash)
  mkdir -p "$STASH"
  cp "$2"/* "$STASH"/
  ls -la "$STASH" | tail -n +2
  ;;
run | exec)
  mode=$1
  shift
  if [ "$mode" = exec ] && [ $# -eq 0 ]; then
    echo "usage: $0 exec CMD [args]" >&2
    exit 2
  fi
  cd "$(dirname "$0")/.."
  for load in runs/device/load-*; do
    [ -d "$load" ] && cp "$load"/* "$STASH"/
  done
  if [ ! -d "$SITE" ]; then
    mkdir -p "$SITE.partial"
    cat "$STASH"/site.tar.xz.part-* | xz -d -T0 | tar x -C "$SITE.partial"
    mv "$SITE.partial" "$SITE"
  fi
  mkdir -p ../shared/data
  cp -n runs/device/data/* ../shared/data/ 2>/dev/null || true
  # The checkout runs uninstalled here: the build configuration maps export/ to
  # scorer.export, and a link stands in for it (ignored by git).
  [ -e scorer/export ] || ln -s ../export scorer/export
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  python -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())"
  python -c "import polars, numba, sklearn, fasttext; print('polars', polars.__version__, 'numba', numba.__version__)"
  if [ "$mode" = exec ]; then
    exec "$@"
  fi
  python -m benchmarks.gpu "$@"
  ;;
*)
  echo "usage: $0 stash DIR | run [args] | exec CMD [args]" >&2
  exit 2
  ;;
esac
