#!/usr/bin/env bash
# On the GPU machine, after the rig (../shared/devrig): unpack the [serve] wheels carried in .serve-rig/
# into the rig interpreter's own site-packages. There, Triton's Python stub (which runs isolated and
# ignores PYTHONPATH) finds numpy and pyzmq, and PyTriton finds its bundled libraries (it looks for them
# beside a pytriton that lies in site-packages). Then put that folder first on PYTHONPATH, so that the
# serving process takes numpy<2 from it rather than the rig's numpy 2 (PyTriton 0.7 needs numpy<2).
# Usage: bash bench/serve_rig.sh [WHEEL_FOLDER]   (default .serve-rig; bench/device/session.sh passes the
# folder its transfers filled)
set -euo pipefail
WHEELS=${1:-.serve-rig}
PYTHON=${PYTHON:-python3.11}
SITE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$SITE"
for wheel in "$WHEELS"/*.whl; do
  "$PYTHON" -m zipfile -e "$wheel" "$SITE"
done
# zipfile drops the executable bits of Triton's server and its Python stubs
if [ -d "$SITE/pytriton" ]; then
  chmod +x "$SITE/pytriton/tritonserver/bin/tritonserver" "$SITE"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
fi
echo "unpacked $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
echo "now: export PYTHONPATH=$SITE:\$PYTHONPATH"
