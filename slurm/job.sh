#!/usr/bin/env bash
# Runs one VSML job inside a Slurm allocation: starts every rank with srun.
#
# Usually submitted by slurm/schedule.sh (see `bash slurm/schedule.sh --help`);
# it also works on its own:
#
#     sbatch --nodes=2 --ntasks-per-node=4 slurm/job.sh -- python3 launch.py --config_files ...
#
# usage: job.sh [--run-dir DIR] [--resume] [--gpus] -- COMMAND [ARG ...]
#
#   --run-dir DIR  the run directory; `--run_dir DIR` is appended to COMMAND
#                  (`DIR/task-$SLURM_ARRAY_TASK_ID` in an array job)
#   --resume       if that run directory already holds a checkpoint, run
#                  `<python> launch.py --resume DIR` instead (a later job of a
#                  chain); without a checkpoint yet, start it as above
#   --gpus         start each rank through assign_gpu.py (one GPU per rank)
#
# Environment: VSML_VENV (virtual environment to activate; default .venv if it
# exists, `none` to skip), VSML_SETUP (a file sourced first, e.g. module loads),
# VSML_SRUN_ARGS (extra srun options; srun gets --mpi=pmi2, the PMI of the venv's
# MPICH, unless they name another --mpi, e.g. "--mpi=pmix" for an MPI built for it).
#
# Slurm's pre-timeout signal (--signal=B:USR1@300, sent to this script) and
# SIGTERM are forwarded to srun, which forwards them to every rank; the
# training loop then writes a checkpoint and exits 0. The exit status is srun's.
set -euo pipefail

readonly CHECKPOINTS=(checkpoint.npz checkpoint.prev.npz)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
    echo "slurm/job.sh: error: $*" >&2
    exit 2
}

log() {
    echo "slurm/job.sh [$(date '+%F %T')]: $*"
}

srun_pid=""
stopped_early=""
forward() {
    if [[ -z $srun_pid ]]; then  # before the ranks exist: there is nothing to checkpoint
        stopped_early=$1
        return
    fi
    log "received SIG$1: forwarding it to the ranks (they checkpoint and stop)"
    kill -s "$1" "$srun_pid" 2>/dev/null || true
}
# Trapped first: Slurm's pre-timeout signal may come early (up to a minute), even before srun starts.
trap 'forward USR1' USR1
trap 'forward TERM' TERM
trap 'forward INT' INT

run_dir=""
resume=0
gpus=0
while (($#)); do
    case $1 in
        --run-dir) (($# >= 2)) || die "--run-dir needs a value"; run_dir=$2; shift 2 ;;
        --run-dir=*) run_dir=${1#*=}; shift ;;
        --resume) resume=1; shift ;;
        --gpus) gpus=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) die "unknown option '$1' (the command goes after --; see --help)" ;;
    esac
done
(($#)) || die "no command given; usage: job.sh [--run-dir DIR] [--resume] [--gpus] -- COMMAND [ARG ...]"
command=("$@")

# The interpreter and script of a `... launch.py ...` command (used to resume).
launcher=()
for word in "${command[@]}"; do
    launcher+=("$word")
    if [[ $word == *launch.py ]]; then break; fi
done
[[ ${launcher[-1]} == *launch.py ]] || launcher=()

if [[ -n ${VSML_SETUP:-} ]]; then
    [[ -f $VSML_SETUP ]] || die "VSML_SETUP=$VSML_SETUP is not a file"
    set +u; source "$VSML_SETUP"; set -u
fi
venv=${VSML_VENV:-.venv}
if [[ $venv != none && -f $venv/bin/activate ]]; then
    set +u; source "$venv/bin/activate"; set -u
elif [[ -n ${VSML_VENV:-} && $venv != none ]]; then
    die "VSML_VENV=$venv has no bin/activate"
fi

if [[ -n $run_dir ]]; then
    if [[ -n ${SLURM_ARRAY_TASK_ID:-} ]]; then
        run_dir=$run_dir/task-$SLURM_ARRAY_TASK_ID
    fi
    has_checkpoint=0
    for name in "${CHECKPOINTS[@]}"; do
        [[ -f $run_dir/$name ]] && has_checkpoint=1
    done
    if ((resume && has_checkpoint)); then
        ((${#launcher[@]})) || die "--resume needs a '... launch.py ...' command, got: ${command[*]}"
        command=("${launcher[@]}" --resume "$run_dir")
        log "resuming $run_dir from its checkpoint"
    else
        ((resume)) && log "$run_dir has no checkpoint yet: starting it"
        command+=(--run_dir "$run_dir")
    fi
fi

if ((gpus)); then
    # assign_gpu.py of this checkout (when sbatch ran a spooled copy of this file: the working directory's)
    assign_gpu=$(dirname -- "$(dirname -- "${BASH_SOURCE[0]}")")/assign_gpu.py
    [[ -f $assign_gpu ]] || assign_gpu=assign_gpu.py
    python=python3
    [[ $(basename -- "${command[0]}") == python* ]] && python=${command[0]}
    command=("$python" "$assign_gpu" "${command[@]}")
fi

srun_args=(--kill-on-bad-exit=1)
extra=()
if [[ -n ${VSML_SRUN_ARGS:-} ]]; then
    read -r -a extra <<<"$VSML_SRUN_ARGS"
fi
# The venv's MPICH finds its peers through PMI-2; srun's own default (MpiDefault, often
# `none`) would start every task as a one-rank world of its own.
[[ " ${extra[*]} " == *" --mpi"* ]] || srun_args+=(--mpi=pmi2)
srun_args+=("${extra[@]}")

if [[ -n $stopped_early ]]; then
    log "received SIG$stopped_early before the ranks started: not starting them (a later job of a chain resumes)"
    exit 0
fi

log "job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+ task $SLURM_ARRAY_TASK_ID} on ${SLURM_JOB_NODELIST:-?}: srun ${srun_args[*]} ${command[*]}"
srun "${srun_args[@]}" "${command[@]}" &
srun_pid=$!

# `wait` returns early when a trapped signal arrives; keep waiting for srun.
while kill -0 "$srun_pid" 2>/dev/null; do
    wait "$srun_pid" || true
done
status=0
wait "$srun_pid" || status=$?  # bash keeps the status of a finished child
log "srun finished with status $status"
exit "$status"
