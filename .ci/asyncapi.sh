#!/usr/bin/env bash
# The Kafka side's AsyncAPI document: `cargo test` already fails when docs/asyncapi.yaml differs
# from what the topology and the contracts generate; this validates the file with the AsyncAPI
# parser from the npm registry (pinned), installed into a scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
command -v npm >/dev/null || { echo "npm is required (Node.js)" >&2; exit 1; }
npm install --prefix "$dir" --no-audit --no-fund --silent @asyncapi/parser@3.6.6 >/dev/null
cp .ci/asyncapi.mjs "$dir/validate.mjs"
node "$dir/validate.mjs" "$PWD/docs/asyncapi.yaml"
