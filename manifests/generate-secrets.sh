#!/usr/bin/env bash
# Create the git-ignored env/ini files that kustomize's secretGenerator reads,
# with random passwords. Run once before the first `kubectl apply -k`:
#
#     manifests/generate-secrets.sh            # keeps files that already exist
#     manifests/generate-secrets.sh --force    # new passwords everywhere
#
# Existing files are kept on purpose: PostgreSQL and the MLflow admin user take
# their passwords on first start only, so new values would no longer match the
# stored ones. Use --force only for a fresh install (empty volumes).
# The *.env.example / *.ini.example files beside each output show its keys.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

umask 077

# Hex only: values are used inside database URIs and an ini file unescaped.
rand() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex "$1"
  else
    python3 -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"
  fi
}

# write PATH: stdin to PATH (atomically), unless PATH exists and --force was not given.
write() {
  local path=$1 tmp
  if [[ -e $path && $force -eq 0 ]]; then
    cat >/dev/null
    echo "kept    ${path#"$here"/}"
    return
  fi
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$path.XXXXXX")
  cat >"$tmp"
  mv "$tmp" "$path"
  echo "created ${path#"$here"/}"
}

# value FILE KEY: the value of KEY in an env file.
value() {
  sed -n "s/^$2=//p" "$1" | tail -n 1
}

base=$here/base/secrets
cluster=$here/overlays/cluster/secrets

write "$base/postgres.env" <<END
POSTGRES_USER=mlflow
POSTGRES_PASSWORD=$(rand 24)
POSTGRES_DB=mlflow
END

write "$base/minio.env" <<END
MINIO_ROOT_USER=twinflow
MINIO_ROOT_PASSWORD=$(rand 24)
END

# MLflow basic-auth (overlays/cluster). The admin user is created on the first
# start from MLFLOW_AUTH_ADMIN_*; pipeline steps log in with the same account.
write "$cluster/mlflow-auth.env" <<END
MLFLOW_AUTH_ADMIN_USERNAME=admin
MLFLOW_AUTH_ADMIN_PASSWORD=$(rand 24)
MLFLOW_FLASK_SERVER_SECRET_KEY=$(rand 32)
END

write "$cluster/mlflow-client.env" <<END
MLFLOW_TRACKING_USERNAME=$(value "$cluster/mlflow-auth.env" MLFLOW_AUTH_ADMIN_USERNAME)
MLFLOW_TRACKING_PASSWORD=$(value "$cluster/mlflow-auth.env" MLFLOW_AUTH_ADMIN_PASSWORD)
END

# The auth app's users live in their own database (created by base/postgres-init.sql).
write "$cluster/basic_auth.ini" <<END
[mlflow]
default_permission = READ
database_uri = postgresql://$(value "$base/postgres.env" POSTGRES_USER):$(value "$base/postgres.env" POSTGRES_PASSWORD)@postgres:5432/mlflow_auth
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
END
