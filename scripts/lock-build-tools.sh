#!/usr/bin/env bash
# Print the lock's own entries (pin and sha256 hashes) for the tools that build pyspark's
# source archive: setuptools, wheel and what wheel needs (packaging). Installed first,
# hash-checked, so the sdist builds with --no-build-isolation on a fresh venv (whose bundled
# setuptools 65 has no bdist_wheel) and nothing unpinned is downloaded.   usage: bash scripts/lock-build-tools.sh LOCK > FILE
set -euo pipefail
awk '/^(setuptools|wheel|packaging)==/ {keep=1; print; next}
     keep && /^    --hash=/ {print; next}
     {keep=0}' "$1"
