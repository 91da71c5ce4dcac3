#!/usr/bin/env bash
# The README's quick start on a fresh clone, as a new user runs it (minutes: it installs
# torch into a new venv, so `make test` does not run it; tests/e2e/test_demo.py is its cheap
# in-suite part). Steps, each of which must exit 0:
#   1. clone the committed checkout into a temporary folder;
#   2. `make demo` in a clean environment (env -i: HOME, a PATH with npm, npx and node
#      hidden, pip's own settings) - the demo must need neither npm nor the test extras;
#   3. every command the demo printed (`  $ ...` lines), exactly as printed, in bash;
#   4. the README's activate line, then bare `stylempi models` and `mpirun --version`.
# Usage: tests/quickstart.sh [KEEP_DIR]   (default: a mktemp folder, removed on success)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work/home" "$work/bin"

# A PATH like the system's, minus npm: links to every tool in the usual folders but those.
for dir in /usr/local/bin /usr/bin /bin; do
  [ -d "$dir" ] || continue
  for tool in "$dir"/*; do
    name=$(basename "$tool")
    case $name in npm|npx|node|nodejs|corepack) continue ;; esac
    [ -e "$work/bin/$name" ] || ln -s "$tool" "$work/bin/$name"
  done
done

clean_env=(env -i HOME="$work/home" PATH="$work/bin" LANG=C.UTF-8 TERM=dumb)
for var in $(compgen -e | grep '^PIP_' || true); do clean_env+=("$var=${!var}"); done

step() { printf '\n=== %s\n' "$*"; }

step "fresh clone of $(git -C "$src" rev-parse --short HEAD) into $work/stylempi"
rm -rf "$work/stylempi"
git clone -q "$src" "$work/stylempi"
cd "$work/stylempi"
"${clean_env[@]}" bash -c 'command -v npm' && { echo "npm is still visible"; exit 1; }

step "make demo (no npm on PATH)"
"${clean_env[@]}" make demo 2>&1 | tee "$work/demo.log"
[ ! -e node_modules ] || { echo "make demo installed node_modules"; exit 1; }
if .venv/bin/python -c 'import pytest' 2>/dev/null; then echo "make demo installed the test extras"; exit 1; fi

step "every command the demo printed, as printed"
mapfile -t printed < <(sed -n 's/^  \$ //p' "$work/demo.log")
[ "${#printed[@]}" -ge 2 ] || { echo "the demo printed no commands"; exit 1; }
for line in "${printed[@]}"; do
  echo "\$ $line"
  "${clean_env[@]}" bash -c "$line" > "$work/last.log" 2>&1 || { cat "$work/last.log"; exit 1; }
  tail -n 2 "$work/last.log"
done

step "the README's activate line, then bare commands"
"${clean_env[@]}" bash -c '. .venv/bin/activate && stylempi models && mpirun --version | head -n 1'

step "quick start OK"
if [ $# -eq 0 ]; then rm -rf "$work"; fi
