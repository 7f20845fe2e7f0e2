#!/usr/bin/env bash
# `make image`: build the CPU target of components/Dockerfile with podman on a
# machine that reaches no container registry (only Debian's mirror and the
# package index pip uses).
#
#   1. the base: a Debian bookworm root file system with Python 3.11, made by
#      debootstrap and imported into podman (once; ~1.5 min);
#   2. the image, from the repository root, with
#      - PYTHON_IMAGE pointed at that base,
#      - the CPU torch 2.13.0 wheel as the `wheels` build context (pip takes it
#        from the host's own sources: no multi-GB CUDA build is downloaded),
#      - the host pip's index, and its CA bundle as the build secret pip_cert
#        (mounted for the RUNs that use pip, never stored in a layer).
#
# Environment: IMAGE (tag; default $DAETALKER_IMAGE, else the CPU image the components name),
# BASE_IMAGE, PIP_INDEX_URL, PIP_CERT, DAETALKER_STATE (work folder parent),
# PODMAN_BUILD_FLAGS (more `podman build` flags, e.g. --no-cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=components/image
IMAGE=${IMAGE:-${DAETALKER_IMAGE:-ghcr.io/daetalker/daetalker:0.1.0-cpu}}
BASE_IMAGE=${BASE_IMAGE:-localhost/daetalker-base:bookworm-py3.11}
WORK=$(realpath -m "${DAETALKER_STATE:-.state}/image")
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/$HERE/containers.conf}

need_debs() {
  local missing="" cmd
  for cmd in "$@"; do command -v "$cmd" >/dev/null || missing="$missing $cmd"; done
  [ -z "$missing" ] && return 0
  echo "installing Debian packages:$missing"
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
}

# A bookworm root file system with python3.11 and venv, imported as BASE_IMAGE.
make_base() {
  podman image exists "$BASE_IMAGE" && return 0
  need_debs debootstrap
  local root
  root=$(mktemp -d /var/tmp/daetalker-rootfs.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  echo "debootstrap bookworm -> $BASE_IMAGE"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/debootstrap
  tar -C "$root" --numeric-owner -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
}

# The CPU torch wheel, through pip's own sources (find-links, extra indexes); a
# `+cpu` pin can only match a CPU build. Empty folder (PyTorch's CPU index then) if pip has none.
torch_wheel() {
  mkdir -p "$WORK/wheels"
  ls "$WORK"/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 && return 0
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$WORK/wheels" 'torch==2.13.0+cpu' \
    || echo "no local CPU torch wheel: the build takes torch from PyTorch's CPU index"
}

main() {
  need_debs podman runc
  mkdir -p "$WORK"
  local t0=$SECONDS index cert
  make_base
  torch_wheel
  index=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || echo https://pypi.org/simple)}
  cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
  # The commit, "+dirty" when src/ has uncommitted changes; also as --label: buildah's layer cache
  # ignores a changed build argument, so the LABEL step alone could keep an earlier commit.
  local commit
  commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  [ -z "$(git status --porcelain -- src pyproject.toml 2>/dev/null)" ] || commit="$commit+dirty"
  local args=(--network host --layers -f components/Dockerfile --target cpu -t "$IMAGE"
              --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "PIP_INDEX_URL=$index"
              --build-context "wheels=$WORK/wheels"
              --build-arg "GIT_COMMIT=$commit" --label "org.opencontainers.image.revision=$commit")
  if ls "$WORK"/wheels/torch-*.whl >/dev/null 2>&1; then args+=(--build-arg "TORCH_INDEX_URL=$index"); fi
  if [ -n "$cert" ] && [ -s "$cert" ]; then args+=(--secret "id=pip_cert,src=$cert"); fi
  # shellcheck disable=SC2206  # PODMAN_BUILD_FLAGS: words on purpose
  podman build "${args[@]}" ${PODMAN_BUILD_FLAGS:-} .
  local size
  size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
  echo "built $IMAGE: $((size / 1000000)) MB in $((SECONDS - t0)) s"
}

main "$@"
