#!/usr/bin/env bash
# Installs the deployment tooling (osls, pinned in package.json, locked in package-lock.json) into
# node_modules/ with `npm ci`. Needs Node 20.19+ and the npm registry; touches no AWS account.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
    echo "install-node.sh: npm not found; install Node.js 20.19 or newer" >&2
    exit 1
fi

# `npm ci` wipes and reinstalls node_modules (~30 s): skip it when the pinned osls is already there.
pinned="$(node -p "require('./package.json').devDependencies.osls")"
installed="$(node -p "require('./node_modules/osls/package.json').version" 2>/dev/null || true)"
if [ "$pinned" = "$installed" ]; then
    echo "install-node.sh: osls $installed already installed"
    exit 0
fi

npm ci --no-audit --no-fund --loglevel=error
echo "install-node.sh: installed osls $(node -p "require('./node_modules/osls/package.json').version")"
