#!/usr/bin/env bash
# Runs one VSML task under mpirun, on this machine or on several (started by
# ssh/schedule.sh in a tmux window, from the synced code directory).
#
# usage: bash ssh/job.sh --ranks N [--gpus IDS] [--run-dir DIR] [--task I]
#                        [--hosts H1,H2,... [--host-gpus 'IDS1;IDS2;...']]
#                        [--mpirun CMD] [--venv DIR|none] -- COMMAND [ARG ...]
#
#   --ranks N     MPI ranks (mpirun -n N); with --hosts, ranks on each host
#   --gpus IDS    comma-separated GPU ids: CUDA_VISIBLE_DEVICES=IDS and every
#                 rank starts through assign_gpu.py (rank r gets GPU r mod #IDS)
#   --hosts LIST  one job over these hosts (this one first), N ranks on each, started
#                 by MPICH's launcher over ssh from the same folder path on each host
#   --host-gpus L the GPU ids of each host of --hosts, ';'-separated, in that order
#   --run-dir D   appends `--run_dir D` to COMMAND; the output is also kept in D/output.log
#   --task I      appends `--task I` (task I of the command's --array file)
#   --mpirun CMD  the MPI launcher, words split on blanks [mpirun]
#   --venv DIR    virtual environment to activate [.venv if present; none: skip]
#
# Extra launcher options (e.g. Open MPI's "--oversubscribe --bind-to none") come
# from VSML_MPIRUN_ARGS. Ctrl-C in the window reaches every rank (through
# mpirun), which writes a checkpoint and stops.
set -euo pipefail

die() {
    echo "ssh/job.sh: error: $*" >&2
    exit 2
}

ranks=""
gpus=""
run_dir=""
task=""
hosts=""
host_gpus=""
mpirun=mpirun
venv=.venv
while (($#)); do
    case $1 in
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        --ranks | --gpus | --run-dir | --task | --hosts | --host-gpus | --mpirun | --venv)
            (($# >= 2)) || die "$1 needs a value"
            case $1 in
                --ranks) ranks=$2 ;;
                --gpus) gpus=$2 ;;
                --run-dir) run_dir=$2 ;;
                --task) task=$2 ;;
                --hosts) hosts=$2 ;;
                --host-gpus) host_gpus=$2 ;;
                --mpirun) mpirun=$2 ;;
                --venv) venv=$2 ;;
            esac
            shift 2 ;;
        *) die "unknown option '$1' (the command goes after --)" ;;
    esac
done
(($#)) || die "no command given after --"
[[ $ranks =~ ^[1-9][0-9]*$ ]] || die "--ranks must be a positive integer, got '$ranks'"
command=("$@")

if [[ $venv != none && -f $venv/bin/activate ]]; then
    set +u; source "$venv/bin/activate"; set -u
fi
[[ -z $task ]] || command+=(--task "$task")
log=/dev/null
if [[ -n $run_dir ]]; then
    mkdir -p -- "$run_dir"
    command+=(--run_dir "$run_dir")
    log=$run_dir/output.log
fi
python=python3
[[ $(basename -- "${command[0]}") == python* ]] && python=${command[0]}
if [[ -n $gpus ]]; then
    export CUDA_VISIBLE_DEVICES=$gpus
    unset GPU_COUNT
    command=("$python" assign_gpu.py "${command[@]}")
fi
read -r -a launcher <<<"$mpirun"
if [[ -n ${VSML_MPIRUN_ARGS:-} ]]; then
    read -r -a extra <<<"$VSML_MPIRUN_ARGS"
    launcher+=("${extra[@]}")
fi
if [[ -n $hosts ]]; then
    # MPICH (Hydra): one segment per host, so each host's ranks get that host's GPUs; the
    # hostfile gives each host exactly its segment's slots, in order.
    IFS=, read -r -a host_list <<<"$hosts"
    IFS=';' read -r -a gpu_list <<<"$host_gpus"
    unset GPU_COUNT  # every rank gets this environment; its host's ids come per segment
    hostfile=${run_dir:-.}/hostfile
    mkdir -p -- "$(dirname -- "$hostfile")"
    printf "%s:$ranks\n" "${host_list[@]}" >"$hostfile"
    full=("${launcher[@]}" -launcher ssh -f "$hostfile")
    for i in "${!host_list[@]}"; do
        ((i == 0)) || full+=(:)
        full+=(-n "$ranks")
        if [[ -n ${gpu_list[i]:-} ]]; then
            full+=(-env CUDA_VISIBLE_DEVICES "${gpu_list[i]}" "$python" assign_gpu.py)
        fi
        full+=("${command[@]}")
    done
else
    full=("${launcher[@]}" -n "$ranks" "${command[@]}")
fi

echo "ssh/job.sh [$(date '+%F %T')] on $(hostname)${gpus:+, CUDA_VISIBLE_DEVICES=$gpus}${hosts:+, hosts $hosts}: ${full[*]}" | tee -a "$log"
status=0
# tee -i: Ctrl-C must not kill the log while the ranks write their checkpoint.
"${full[@]}" 2>&1 | tee -i -a "$log" || status=${PIPESTATUS[0]}
echo "ssh/job.sh [$(date '+%F %T')]: finished with status $status" | tee -a "$log"
if [[ -t 0 ]]; then
    read -r -p "press Enter to close this window " || true
fi
exit "$status"
