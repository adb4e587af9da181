#!/usr/bin/env bash
# Shared helpers of the launch scripts (sourced, not run).
# DRY_RUN=1 prints every command instead of running it.

# Runs (or, with DRY_RUN=1, prints) a command, each argument shell-quoted.
run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

die() {
  echo "error: $*" >&2
  exit 1
}

# Joins arguments into one shell-quoted string (for a remote --command).
quote_args() {
  local out="" arg
  for arg in "$@"; do
    out+="$(printf '%q' "$arg") "
  done
  printf '%s' "${out% }"
}
