# Sourced by the scripts: the project's locally installed tools on PATH, and
# progress output (coloured on a terminal, plain in CI logs).
export PATH="$PWD/.tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"
if [[ -t 1 ]]; then B=$'\033[1;34m' G=$'\033[32m' R=$'\033[1;31m' N=$'\033[0m'; else B= G= R= N=; fi
step() { printf '%s==>%s %s\n' "$B" "$N" "$*"; }
ok() { printf '    %sok%s %s\n' "$G" "$N" "$*"; }
die() { printf '%serror:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
