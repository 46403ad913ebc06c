#!/usr/bin/env bash
# The action's install step: download the publish binary for this runner from the release that
# matches the action's ref, check its SHA-256 against the release's checksums file, and put it
# on the PATH. With PUBLISH_INSTALL=cargo, build it from the action's own source instead.
#
# Settings (environment): PUBLISH_VERSION (default: the action's ref), PUBLISH_INSTALL
# (release | cargo), PUBLISH_ACTION_REF, PUBLISH_ACTION_REPOSITORY, and for tests
# PUBLISH_DOWNLOAD_BASE (default https://github.com), PUBLISH_OS / PUBLISH_ARCH
# (default RUNNER_OS / RUNNER_ARCH) and PUBLISH_TARGET (the archive's target, outright).
# A ref that is a commit SHA installs the release named by the version in the action's own
# Cargo.toml at that commit.
set -euo pipefail

fail() {
  echo "::error title=publish install::$*"
  exit 1
}

dest="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/publish-bin"
mkdir -p "$dest"

if [ "${PUBLISH_INSTALL:-release}" = "cargo" ]; then
  command -v cargo >/dev/null || fail "install: cargo needs a Rust toolchain on the runner"
  cargo install --locked --root "$dest" --path "${GITHUB_ACTION_PATH:?}"
  echo "$dest/bin" >>"${GITHUB_PATH:?}"
  exit 0
fi
[ "${PUBLISH_INSTALL:-release}" = "release" ] || fail "input install must be release or cargo"

version="${PUBLISH_VERSION:-${PUBLISH_ACTION_REF:-}}"
repository="${PUBLISH_ACTION_REPOSITORY:-publish-action/publish}"
[ -n "$version" ] || fail "no version: pin the action to a release tag (uses: ${repository}@v1) or set input version"
if [[ "$version" =~ ^[0-9a-f]{40}$ ]]; then
  # Pinned to a commit: install the release named by the crate version in the action's own
  # Cargo.toml at that commit (release tags are immutable).
  manifest="${GITHUB_ACTION_PATH:-}/Cargo.toml"
  crate="$({ tr -d '\r' <"$manifest" | sed -n 's/^version = "\([0-9][0-9A-Za-z.+-]*\)"$/\1/p' | head -n 1; } 2>/dev/null || true)"
  [ -n "$crate" ] ||
    fail "the action is pinned to commit ${version}, whose Cargo.toml names no version: set input version (e.g. version: v1.2.3)"
  echo "the action is pinned to commit ${version}: installing release v${crate} (its Cargo.toml's version)"
  version="v${crate}"
fi
case "$version" in
  v[0-9]*) ;;
  *) fail "the action runs from '${version}', which has no release: pin a release tag or a commit SHA, set input version (e.g. version: v1.2.3), or use install: cargo" ;;
esac

os="${PUBLISH_OS:-${RUNNER_OS:-}}"
# PUBLISH_TARGET (tests: a host-built archive) names the archive's target outright.
arch="${PUBLISH_ARCH:-${RUNNER_ARCH:-}}"
case "${os}/${arch}" in
  Linux/X64) target=x86_64-unknown-linux-musl ;;
  Linux/ARM64) target=aarch64-unknown-linux-musl ;;
  macOS/X64) target=x86_64-apple-darwin ;;
  macOS/ARM64) target=aarch64-apple-darwin ;;
  *) [ -n "${PUBLISH_TARGET:-}" ] || fail "no publish release for ${os}/${arch}: use install: cargo" ;;
esac
target="${PUBLISH_TARGET:-$target}"

asset="publish-${target}.tar.gz"
base="${PUBLISH_DOWNLOAD_BASE:-https://github.com}/${repository}/releases/download/${version}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pinned_hint=""
[ -z "${crate:-}" ] || pinned_hint=" (v${crate} is the version in the pinned commit's Cargo.toml: if it was never released, set input version to a release, e.g. version: v1.2.3)"
curl --fail --silent --show-error --location --retry 3 --output "$work/$asset" "$base/$asset" ||
  fail "cannot download $base/$asset${pinned_hint}"
curl --fail --silent --show-error --location --retry 3 --output "$work/checksums.txt" "$base/checksums.txt" ||
  fail "cannot download $base/checksums.txt"

expected="$(awk -v f="$asset" '$2 == f || $2 == "*" f { print $1 }' "$work/checksums.txt")"
[ -n "$expected" ] || fail "checksums.txt of ${version} has no line for ${asset}"
if command -v sha256sum >/dev/null; then
  actual="$(sha256sum "$work/$asset" | awk '{ print $1 }')"
else
  actual="$(shasum -a 256 "$work/$asset" | awk '{ print $1 }')"
fi
[ "$expected" = "$actual" ] || fail "checksum mismatch for ${asset} of ${version}: expected ${expected}, got ${actual}; not installing"

tar -xzf "$work/$asset" -C "$dest"
[ -x "$dest/publish" ] || fail "${asset} holds no publish binary"
echo "$dest" >>"${GITHUB_PATH:?}"
echo "installed publish ${version} (${target}), sha256 ${actual}"
