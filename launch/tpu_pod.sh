#!/usr/bin/env bash
# Runs deepalign_jax on every worker of a TPU VM pod slice.
#
#   launch/tpu_pod.sh create  --name NAME --zone ZONE --accelerator v4-32 [--runtime VERSION] [--project P] [--spot]
#   launch/tpu_pod.sh install --name NAME --zone ZONE [--project P] [--source DIR]
#   launch/tpu_pod.sh run     --name NAME --zone ZONE [--project P] -- python -m deepalign_jax.train --config ... --workdir gs://...
#   launch/tpu_pod.sh logs    --name NAME --zone ZONE [--project P] [--out DIR]
#   launch/tpu_pod.sh stop    --name NAME --zone ZONE [--project P]
#   launch/tpu_pod.sh delete  --name NAME --zone ZONE [--project P]
#
# `create` reuses a VM that already exists.  `install` copies the project to
# every worker and pip-installs it.  `run` starts the same command on all
# workers (--worker=all) in the background, each logging to
# ~/deepalign_logs/run.log on its worker; JAX finds the other workers itself
# (the CLIs call jax.distributed.initialize when TPU_WORKER_HOSTNAMES lists
# several hosts).  `logs` copies every worker's log to OUT/worker-N.log;
# `stop` ends the run on every worker (SIGTERM, then SIGKILL after 30 s —
# Orbax never leaves a partial checkpoint behind).  Use a gs:// workdir so
# every worker reads and writes the same checkpoints.
# DRY_RUN=1 prints the gcloud commands instead of running them.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

action="${1:-}"
[[ -n "$action" ]] || die "usage: $0 create|install|run|logs|stop|delete --name NAME --zone ZONE [...]"
shift
name="" zone="" accelerator="" runtime="tpu-ubuntu2204-base" project="" spot=0
source_dir="$(cd "$HERE/.." && pwd)" out_dir="logs"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator) accelerator="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --source) source_dir="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option $1" ;;
  esac
done
[[ -n "$name" ]] || die "--name is required"
[[ -n "$zone" ]] || die "--zone is required"
scope=(--zone "$zone")
[[ -z "$project" ]] || scope+=(--project "$project")

ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$name" "${scope[@]}" --worker=all --command "$1"
}

case "$action" in
  create)
    [[ -n "$accelerator" ]] || die "--accelerator is required (e.g. v4-32, v5litepod-16, v5p-8)"
    if [[ "${DRY_RUN:-0}" != "1" ]] && gcloud compute tpus tpu-vm describe "$name" "${scope[@]}" >/dev/null 2>&1; then
      echo "TPU VM $name exists; reusing it"
      exit 0
    fi
    extra=()
    [[ "$spot" == "0" ]] || extra+=(--spot)
    run gcloud compute tpus tpu-vm create "$name" "${scope[@]}" --accelerator-type "$accelerator" \
      --version "$runtime" "${extra[@]}"
    ;;
  install)
    archive="$(mktemp -d)/deepalign_jax.tar.gz"
    run tar -czf "$archive" -C "$source_dir" --exclude .git --exclude workdirs --exclude '*.egg-info' .
    run gcloud compute tpus tpu-vm scp "$archive" "$name:~/deepalign_jax.tar.gz" "${scope[@]}" --worker=all
    ssh_all "mkdir -p ~/deepalign_jax && tar -xzf ~/deepalign_jax.tar.gz -C ~/deepalign_jax && cd ~/deepalign_jax && pip install -q 'jax[tpu]' -e ."
    ;;
  run)
    [[ $# -gt 0 ]] || die "give the command after --, e.g. -- python -m deepalign_jax.train --config ... --workdir gs://..."
    command="$(quote_args "$@")"
    ssh_all "mkdir -p ~/deepalign_logs && cd ~/deepalign_jax && nohup $command > ~/deepalign_logs/run.log 2>&1 < /dev/null &"
    ;;
  logs)
    [[ -n "$accelerator" ]] || accelerator="$(gcloud compute tpus tpu-vm describe "$name" "${scope[@]}" --format='value(acceleratorType)' 2>/dev/null || true)"
    workers="${WORKERS:-}"
    if [[ -z "$workers" ]]; then
      workers="$(gcloud compute tpus tpu-vm describe "$name" "${scope[@]}" --format='value(networkEndpoints.len())' 2>/dev/null || echo 1)"
    fi
    run mkdir -p "$out_dir"
    for ((i = 0; i < workers; i++)); do
      run gcloud compute tpus tpu-vm scp "$name:~/deepalign_logs/run.log" "$out_dir/worker-$i.log" "${scope[@]}" --worker="$i"
    done
    ;;
  stop)
    ssh_all "pkill -TERM -f 'deepalign_jax' || true; sleep 30; pkill -KILL -f 'deepalign_jax' || true"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" "${scope[@]}" --quiet
    ;;
  *)
    die "unknown action $action: expected create|install|run|logs|stop|delete"
    ;;
esac
