#!/usr/bin/env bash
# Start the local MLflow tracking server with mlflow/server.env and print its URL.
#   mlflow/run-local.sh            start (no-op if it already runs)
#   mlflow/run-local.sh down       stop it (whole process group)
#   mlflow/run-local.sh status     'up URL' or 'down'
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
while IFS='=' read -r key value; do
  [[ -z "$key" || "$key" == \#* ]] && continue
  if [[ -z "${!key+x}" ]]; then export "$key=$value"; fi
done < "$here/server.env"
[[ -n "${DAETALKER_MLFLOW_PORT:-}" ]] || unset DAETALKER_MLFLOW_PORT
daetalker="${DAETALKER_BIN:-.venv/bin/daetalker}"
exec "$daetalker" mlflow "${1:-up}"
