#!/usr/bin/env bash
# Requests a TPU slice through queued resources (spot or reserved), waits until it is ACTIVE,
# then installs the project and starts the command on every worker (via tpu_pod.sh).
#
#   launch/tpu_queued.sh --name NAME --zone ZONE --accelerator v5litepod-16 [--runtime VERSION]
#       [--project P] [--spot | --reserved] [--wait-minutes 120] -- python -m deepalign_jax.train ...
#
# A preempted spot slice is not restarted automatically: request it again and
# rerun the same command — training resumes from the last checkpoint in the
# gs:// workdir.  DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

name="" zone="" accelerator="" runtime="tpu-ubuntu2204-base" project="" tier="--spot" wait_minutes=120
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator) accelerator="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --spot) tier="--spot"; shift ;;
    --reserved) tier="--reserved"; shift ;;
    --wait-minutes) wait_minutes="$2"; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option $1" ;;
  esac
done
[[ -n "$name" && -n "$zone" && -n "$accelerator" ]] || die "--name, --zone and --accelerator are required"
[[ $# -gt 0 ]] || die "give the command after --"
scope=(--zone "$zone")
[[ -z "$project" ]] || scope+=(--project "$project")
pod_scope=(--name "$name" --zone "$zone")
[[ -z "$project" ]] || pod_scope+=(--project "$project")

run gcloud compute tpus queued-resources create "$name" "${scope[@]}" --node-id "$name" \
  --accelerator-type "$accelerator" --runtime-version "$runtime" "$tier"
if [[ "${DRY_RUN:-0}" != "1" ]]; then
  for ((minute = 0; minute < wait_minutes; minute++)); do
    state="$(gcloud compute tpus queued-resources describe "$name" "${scope[@]}" --format='value(state.state)')"
    echo "queued resource $name: $state"
    [[ "$state" == "ACTIVE" ]] && break
    [[ "$state" == "FAILED" || "$state" == "SUSPENDED" ]] && die "queued resource $name is $state"
    sleep 60
  done
  [[ "$state" == "ACTIVE" ]] || die "queued resource $name not ACTIVE after $wait_minutes minutes"
else
  echo "+ (wait until queued resource $name is ACTIVE)"
fi
"$HERE/tpu_pod.sh" install "${pod_scope[@]}"
"$HERE/tpu_pod.sh" run "${pod_scope[@]}" -- "$@"
