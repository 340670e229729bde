#!/usr/bin/env bash
# Run a VSML command on a GPU machine over ssh: copy the code there, pick free
# GPUs, and start each (array) task under mpirun in its own tmux window.
#
# usage: bash ssh/schedule.sh --host HOST [OPTIONS] -- COMMAND [ARG ...]
#
#   bash ssh/schedule.sh --host gpu1 --nodes=2 --ntasks-per-node=4 -- python3 launch.py --config_files ...
#   bash ssh/schedule.sh --host gpu1 --array=1-4 -- python3 launch.py --array configs/array/datasets.yaml
#
# One machine (HOST) runs everything. As in the original release, a "node" is
# one GPU of HOST: each task gets --nodes free GPUs and runs
# nodes x ntasks-per-node MPI ranks; assign_gpu.py pins rank r to GPU r mod nodes.
# Array tasks run side by side, each on its own GPUs, in its own tmux window.
#
# Options (--opt=VALUE and --opt VALUE both work; environment defaults in []):
#   --host HOST           ssh destination, e.g. user@gpu1 [VSML_SSH_HOST]
#   --nodes=N             GPUs per task [1]
#   --ntasks-per-node=K   MPI ranks per GPU [1]
#   --array=SPEC          tasks, e.g. 1-4 or 1,3,7: task i appends `--task i` to the
#                         command (which needs `--array FILE`) and runs in RUN/task-i
#   --gpus=IDS            use these GPU ids (e.g. 0,1,2,3) instead of asking gpustat
#   --cpu                 use no GPU (no gpustat, no assign_gpu.py)
#   --max-gpu-memory=MIB  a GPU is free when gpustat shows no process on it and at
#                         most MIB MiB in use [VSML_GPU_FREE_MIB; 500]
#   --remote-dir=DIR      code directory on HOST, relative to its home [VSML_REMOTE_DIR; vsml]
#   --run_dir=RUN         run directory, relative to the code directory
#                         [runs/<date>-<time>-<name>]; a `--run_dir` in COMMAND is taken too
#   --session=NAME        tmux session [vsml-<date>-<time>]
#   --mpirun=CMD          MPI launcher on HOST [VSML_MPIRUN; mpirun, the venv's MPICH one
#                         once .venv is active]; extra options via VSML_MPIRUN_ARGS on HOST
#   --install             first create .venv on HOST and pip install -r requirements.txt
#   --dry-run             print every command (ssh, rsync) instead of running it
#   -h, --help            this text
#
# The code is copied with rsync (without .git, .venv, runs, wandb; nothing on
# HOST is deleted). gpustat must be installed on HOST (pip install gpustat;
# VSML_GPUSTAT names another path, e.g. ~/.local/bin/gpustat). Results stay in
# HOST:DIR/RUN; the last lines printed say how to attach, follow and fetch them.
# Several machines: use slurm/schedule.sh, or mpirun --hostfile by hand.
set -euo pipefail

readonly SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly REPO_DIR=$(dirname -- "$SCRIPT_DIR")
readonly PROG="ssh/schedule.sh"
readonly RSYNC_EXCLUDES=(.git .venv runs wandb __pycache__ .pytest_cache)

# shellcheck source=../schedule_common.sh
source "$SCRIPT_DIR/../schedule_common.sh"

# Runs (or, with --dry-run, prints) one local command.
run() {
    if ((dry_run)); then
        echo "$(quote "$@")"
    else
        "$@"
    fi
}

# Runs (or, with --dry-run, prints as "ssh HOST: COMMAND") one shell command on HOST.
remote() {
    if ((dry_run)); then
        echo "ssh $host: $1"
    else
        ssh "$host" "$1"
    fi
}

# Sets `tasks` to the indices of an --array spec: 1-3,7 -> (1 2 3 7).
expand_array() {
    local part start end i parts
    tasks=()
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            start=${BASH_REMATCH[1]} end=${BASH_REMATCH[2]}
            ((start <= end)) || die "--array range $part is empty"
            for ((i = start; i <= end; i++)); do tasks+=("$i"); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            tasks+=("$part")
        else
            die "--array must look like 1-4 or 1,3,7, got '$1'"
        fi
    done
    ((${#tasks[@]})) || die "--array '$1' names no task"
}

host=${VSML_SSH_HOST:-}
nodes=1
ntasks_per_node=1
array=""
gpu_ids=""
cpu=0
max_gpu_memory=${VSML_GPU_FREE_MIB:-500}
remote_dir=${VSML_REMOTE_DIR:-vsml}
run_dir=""
session=""
mpirun=${VSML_MPIRUN:-mpirun}
install=0
dry_run=0

while (($#)); do
    option=$1
    case $option in
        -h | --help) usage; exit 0 ;;
        --dry-run) dry_run=1; shift; continue ;;
        --cpu) cpu=1; shift; continue ;;
        --install) install=1; shift; continue ;;
        --) shift; break ;;
        --*=*) name=${option%%=*}; value=${option#*=}; shift ;;
        --*) name=$option; (($# >= 2)) || die "$name needs a value"; value=$2; shift 2 ;;
        *) die "unexpected '$option': the command goes after --" ;;
    esac
    case $name in
        --host) host=$value ;;
        --nodes) nodes=$value ;;
        --ntasks-per-node) ntasks_per_node=$value ;;
        --array) array=$value ;;
        --gpus) gpu_ids=$value ;;
        --max-gpu-memory) max_gpu_memory=$value ;;
        --remote-dir) remote_dir=$value ;;
        --run_dir | --run-dir) run_dir=$value ;;
        --session) session=$value ;;
        --mpirun) mpirun=$value ;;
        *) die "unknown option '$name'" ;;
    esac
done
(($#)) || die "no command given after --; e.g. bash $PROG --host HOST -- python3 launch.py --config_files configs/quickstart.yaml"
command=("$@")
[[ -n $host ]] || die "--host HOST is required (or set VSML_SSH_HOST)"
require_uint --nodes "$nodes"
require_uint --ntasks-per-node "$ntasks_per_node"
[[ $max_gpu_memory =~ ^[0-9]+$ ]] || die "--max-gpu-memory must be a number of MiB, got '$max_gpu_memory'"
[[ -z $gpu_ids || $gpu_ids =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must look like 0,1,3, got '$gpu_ids'"
((!cpu)) || [[ -z $gpu_ids ]] || die "--cpu and --gpus exclude each other"
remote_dir=${remote_dir#\~/}  # ssh starts in the home directory
[[ -n $remote_dir ]] || die "--remote-dir must not be empty"

# Take the command's --run_dir, find its --array / --config_files.
scan_command
((resume_given == 0)) || die "resuming over ssh: run the '--resume' command by hand on $host (see docs/running.md, \"On a GPU machine over ssh\")"
((task_given == 0)) || [[ -z $array ]] || die "the command has --task but --array=$array picks the tasks"
if [[ -n $array && -z $array_file ]]; then
    die "--array=$array needs a command with '--array FILE' (task i runs 'launch.py ... --task i')"
fi

tasks=("")  # one task, not an array
[[ -z $array ]] || expand_array "$array"
stamp=$(date +%Y%m%d-%H%M%S)
name=run
[[ -n $first_config ]] && name=$(basename -- "${first_config%.*}")
[[ -n $array_file ]] && name=$(basename -- "${array_file%.*}")
[[ -n $run_dir ]] || run_dir="runs/$stamp-$name"
[[ -n $session ]] || session="vsml-$stamp"
ranks=$((nodes * ntasks_per_node))
needed=$((nodes * ${#tasks[@]}))

if ((dry_run)); then
    echo "# dry run: nothing runs; \"ssh $host: X\" means: run X on $host (GPUs <free-i> come from gpustat)"
fi

# 1. Copy the code.
excludes=()
for pattern in "${RSYNC_EXCLUDES[@]}"; do excludes+=(--exclude "$pattern"); done
remote "mkdir -p $(quote "$remote_dir")"
run rsync -az "${excludes[@]}" "$REPO_DIR/" "$host:$remote_dir/"
if ((install)); then
    remote "cd $(quote "$remote_dir") && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
fi

# 2. Pick GPUs: $needed of them, $nodes per task.
picked=()
if ((cpu)); then
    :
elif [[ -n $gpu_ids ]]; then
    IFS=, read -r -a picked <<<"$gpu_ids"
    ((${#picked[@]} >= needed)) || die "--gpus=$gpu_ids has ${#picked[@]} GPU(s); $needed needed ($nodes per task x ${#tasks[@]} task(s))"
elif ((dry_run)); then
    remote "${VSML_GPUSTAT:-gpustat} --json"
    for ((g = 0; g < needed; g++)); do picked+=("<free-$((g + 1))>"); done
else
    report=$(ssh "$host" "${VSML_GPUSTAT:-gpustat} --json") || die "'ssh $host ${VSML_GPUSTAT:-gpustat} --json' failed: is gpustat installed there? (pip install gpustat; or pass --gpus=IDS)"
    free=$(python3 "$SCRIPT_DIR/free_gpus.py" --max-memory "$max_gpu_memory" <<<"$report") || die "cannot read the gpustat output of $host"
    picked=()
    [[ -z $free ]] || IFS=, read -r -a picked <<<"$free"
    ((${#picked[@]} >= needed)) || die "$host has ${#picked[@]} free GPU(s) (${free:-none}); $needed needed ($nodes per task x ${#tasks[@]} task(s)); use fewer --nodes, --gpus=IDS or --max-gpu-memory"
fi

# 3. One tmux window per task.
summary=()
for t in "${!tasks[@]}"; do
    task=${tasks[t]}
    job_args=(--ranks "$ranks")
    [[ $mpirun == mpirun ]] || job_args+=(--mpirun "$mpirun")
    window=run
    task_dir=$run_dir
    if [[ -n $task ]]; then
        window=task-$task
        task_dir=$run_dir/task-$task
        job_args+=(--task "$task")
    fi
    job_args+=(--run-dir "$task_dir")
    gpus=""
    if ((${#picked[@]})); then
        gpus=$(IFS=,; echo "${picked[*]:t*nodes:nodes}")
        job_args+=(--gpus "$gpus")
    fi
    window_command=$(quote bash ssh/job.sh "${job_args[@]}" -- "${command[@]}")
    if ((t == 0)); then
        tmux_args=(new-session -d -s "$session" -n "$window")
    else
        tmux_args=(new-window -d -t "$session:" -n "$window")
    fi
    # -c "$PWD" (expanded on HOST): the window starts in the code directory.
    remote "cd $(quote "$remote_dir") && tmux $(quote "${tmux_args[@]}") -c \"\$PWD\" $(quote "$window_command")"
    summary+=("  $window: ${gpus:+GPUs $gpus, }$ranks rank(s), run dir $remote_dir/$task_dir")
done

((dry_run)) && exit 0
echo "started ${#tasks[@]} task(s) on $host in tmux session $session:"
printf '%s\n' "${summary[@]}"
echo "attach:  ssh -t $host tmux attach -t $session    (next window: Ctrl-b n; detach: Ctrl-b d)"
echo "follow:  ssh $host tail -f $remote_dir/$run_dir/${tasks[0]:+task-${tasks[0]}/}output.log"
echo "fetch:   rsync -az $host:$remote_dir/$run_dir/ $run_dir/ && python3 -m vsml.plot $run_dir${tasks[0]:+/task-*}"
