#!/usr/bin/env bash
# Run a VSML command on GPU machines over ssh: copy the code there, check every
# host runs the same code and packages, pick free GPUs, and start the job under
# MPI in tmux.
#
# usage: bash ssh/schedule.sh --host HOST [--host HOST2 ...] [OPTIONS] -- COMMAND [ARG ...]
#
#   bash ssh/schedule.sh --host gpu1 --nodes=2 --ntasks-per-node=4 -- python3 launch.py --config_files ...
#   bash ssh/schedule.sh --host gpu1 --array=1-4 -- python3 launch.py --array configs/array/datasets.yaml
#   bash ssh/schedule.sh --host gpu1 --host gpu2 --nodes=4 -- python3 launch.py --config_files ...
#
# One host: as in the original release, a "node" is one GPU of HOST: each task
# gets --nodes free GPUs and runs nodes x ntasks-per-node MPI ranks; assign_gpu.py
# pins rank r to GPU r mod nodes. Array tasks run side by side, each on its own
# GPUs, in its own tmux window.
# Several hosts (--host repeated, or --hostfile): one MPI job spans them all, with
# nodes x ntasks-per-node ranks on each host (--nodes GPUs of each). The first host
# runs MPICH's launcher (the venv's mpiexec) in tmux, which starts the other hosts'
# ranks over ssh, so the first host must reach the others by ssh without a password
# (checked), and the code folder must have the same path on every host. Rank 0, and
# so every output file, is on the first host.
#
# Options (--opt=VALUE and --opt VALUE both work; environment defaults in []):
#   --host HOST           ssh destination, e.g. user@gpu1; repeat it for several hosts
#                         [VSML_SSH_HOST, blank-separated]
#   --hostfile FILE       hosts, one a line (# comments), after any --host
#   --nodes=N             GPUs per task (several hosts: per host) [1]
#   --ntasks-per-node=K   MPI ranks per GPU [1]
#   --array=SPEC          tasks, e.g. 1-4 or 1,3,7: task i appends `--task i` to the
#                         command (which needs `--array FILE`) and runs in RUN/task-i
#                         (one host only: run one schedule.sh per host to spread tasks)
#   --gpus=IDS            use these GPU ids (e.g. 0,1,2,3; on every host) instead of asking gpustat
#   --cpu                 use no GPU (no gpustat, no assign_gpu.py)
#   --max-gpu-memory=MIB  a GPU is free when gpustat shows no process on it and at
#                         most MIB MiB in use [VSML_GPU_FREE_MIB; 500]
#   --remote-dir=DIR      code directory on each host, relative to its home or
#                         absolute [VSML_REMOTE_DIR; vsml]
#   --run_dir=RUN         run directory, relative to the code directory
#                         [runs/<date>-<time>-<name>]; a `--run_dir` in COMMAND is taken too
#   --session=NAME        tmux session [vsml-<date>-<time>]
#   --mpirun=CMD          MPI launcher on the host [VSML_MPIRUN; mpirun, the venv's MPICH one
#                         once .venv is active]; extra options via VSML_MPIRUN_ARGS on the host.
#                         Several hosts need MPICH's (the default)
#   --install             first create .venv on each host and pip install -r requirements.txt
#   --no-sync             do not copy the code (it is there already, e.g. a shared home);
#                         it must still equal this checkout (checked)
#   --dry-run             print every command (ssh, rsync) instead of running it
#   -h, --help            this text
#
# The code is copied with rsync (without .git, .venv, runs, wandb and caches; nothing
# on a host is deleted). Before anything starts, every host must answer ssh without a
# password, hold this checkout's code, and have a python3 (the folder's .venv, else the
# PATH's) with the run's packages, of the same versions on every host: otherwise one
# line names the host and the fix. gpustat must be installed on each host (pip install
# gpustat; VSML_GPUSTAT names another path, e.g. ~/.local/bin/gpustat). Results stay in
# HOST:DIR/RUN on the (first) host; the last lines printed say how to attach, follow
# and fetch them. Extra ssh options: VSML_SSH_OPTS [-o BatchMode=yes -o ConnectTimeout=15].
set -euo pipefail

readonly SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly REPO_DIR=$(dirname -- "$SCRIPT_DIR")
readonly PROG="ssh/schedule.sh"

# shellcheck source=../schedule_common.sh
source "$SCRIPT_DIR/../schedule_common.sh"

# Never wait for a password prompt nobody sees; an unreachable host fails in seconds.
read -r -a ssh_opts <<<"${VSML_SSH_OPTS:--o BatchMode=yes -o ConnectTimeout=15}"

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
        echo "ssh $1: $2"
    else
        ssh "${ssh_opts[@]}" "$1" "$2"
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

# The last non-empty line of a command's output (ssh's own complaint), for one-line errors.
last_line() {
    grep -v '^[[:space:]]*$' <<<"$1" | tail -n 1
}

hosts=()
hostfile=""
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
sync=1
dry_run=0

while (($#)); do
    option=$1
    case $option in
        -h | --help) usage; exit 0 ;;
        --dry-run) dry_run=1; shift; continue ;;
        --cpu) cpu=1; shift; continue ;;
        --install) install=1; shift; continue ;;
        --no-sync) sync=0; shift; continue ;;
        --) shift; break ;;
        --*=*) name=${option%%=*}; value=${option#*=}; shift ;;
        --*) name=$option; (($# >= 2)) || die "$name needs a value"; value=$2; shift 2 ;;
        *) die "unexpected '$option': the command goes after --" ;;
    esac
    case $name in
        --host) hosts+=("$value") ;;
        --hostfile) hostfile=$value ;;
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
if [[ -n $hostfile ]]; then
    [[ -f $hostfile ]] || die "--hostfile $hostfile: no such file"
    while read -r line; do
        line=${line%%#*}
        read -r -a words <<<"$line"
        ((${#words[@]} == 0)) || hosts+=("${words[0]}")
    done <"$hostfile"
    ((${#hosts[@]})) || die "--hostfile $hostfile names no host"
fi
if ((${#hosts[@]} == 0)) && [[ -n ${VSML_SSH_HOST:-} ]]; then read -r -a hosts <<<"$VSML_SSH_HOST"; fi
((${#hosts[@]})) || die "--host HOST is required (or --hostfile FILE, or set VSML_SSH_HOST)"
for ((i = 0; i < ${#hosts[@]}; i++)); do
    for ((j = 0; j < i; j++)); do
        [[ ${hosts[i]} != "${hosts[j]}" ]] || die "host ${hosts[i]} is given twice (--ntasks-per-node sets the ranks per GPU)"
    done
done
readonly multi=$((${#hosts[@]} > 1))
head=${hosts[0]}
require_uint --nodes "$nodes"
require_uint --ntasks-per-node "$ntasks_per_node"
[[ $max_gpu_memory =~ ^[0-9]+$ ]] || die "--max-gpu-memory must be a number of MiB, got '$max_gpu_memory'"
[[ -z $gpu_ids || $gpu_ids =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must look like 0,1,3, got '$gpu_ids'"
((!cpu)) || [[ -z $gpu_ids ]] || die "--cpu and --gpus exclude each other"
remote_dir=${remote_dir#\~/}  # ssh starts in the home directory
[[ -n $remote_dir ]] || die "--remote-dir must not be empty"
((!multi)) || [[ $mpirun == mpirun ]] || die "several hosts run under the venv's MPICH launcher; drop --mpirun"

# Take the command's --run_dir, find its --array / --config_files.
scan_command
((resume_given == 0)) || die "resuming over ssh: run the '--resume' command by hand on $head (see docs/running.md, \"On GPU machines over ssh\")"
((task_given == 0)) || [[ -z $array ]] || die "the command has --task but --array=$array picks the tasks"
if [[ -n $array && -z $array_file ]]; then
    die "--array=$array needs a command with '--array FILE' (task i runs 'launch.py ... --task i')"
fi
((!multi)) || [[ -z $array ]] || die "--array runs on one host: start one $PROG per host, each with its own --array tasks"

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
    echo "# dry run: nothing runs; \"ssh HOST: X\" means: run X on HOST (GPUs <free-i> come from gpustat)"
fi

# 1. Reach every host, then copy the code (and install). What the hosts must hold is this
#    checkout as it is now (edits made while the code is copied or installed do not count).
if ((!dry_run)); then
    manifest=$(cd "$REPO_DIR" && python3 ssh/host_info.py --list)
    reports="checkout	$(cd "$REPO_DIR" && python3 ssh/host_info.py --check <<<"$manifest")"
    for host in "${hosts[@]}"; do
        output=$(ssh "${ssh_opts[@]}" "$host" true 2>&1) || die "cannot reach $host over ssh without a password: $(last_line "$output")"
    done
fi
readarray -t rsync_excludes < <(python3 "$SCRIPT_DIR/host_info.py" --excludes)
excludes=()
for pattern in "${rsync_excludes[@]}"; do excludes+=(--exclude "$pattern"); done
for host in "${hosts[@]}"; do
    if ((sync)); then
        remote "$host" "mkdir -p $(quote "$remote_dir")"
        run rsync -az -e "ssh ${ssh_opts[*]}" "${excludes[@]}" "$REPO_DIR/" "$host:$remote_dir/"
    fi
    if ((install)); then
        remote "$host" "cd $(quote "$remote_dir") && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"
    fi
done

# 2. Every host holds this checkout's code and the same packages (one line otherwise).
activate="if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi"
check="cd $(quote "$remote_dir") 2>/dev/null && $activate && python3 ssh/host_info.py --check"
if ((dry_run)); then
    for host in "${hosts[@]}"; do remote "$host" "$check < MANIFEST"; done
else
    for host in "${hosts[@]}"; do
        output=$(ssh "${ssh_opts[@]}" "$host" "$check" <<<"$manifest" 2>&1) ||
            die "$host has no code folder $remote_dir with ssh/host_info.py ($(last_line "$output")): drop --no-sync, or check --remote-dir"
        reports+=$'\n'"$host	$(last_line "$output")"
    done
    synced=()
    ((!sync)) || synced=(--synced)
    found=$(python3 "$SCRIPT_DIR/host_info.py" --compare "${synced[@]}" <<<"$reports") || die "$found"
fi
if ((multi)); then
    # MPICH's launcher on the first host starts the others' ranks with ssh from there.
    for host in "${hosts[@]:1}"; do
        if ((dry_run)); then
            remote "$head" "ssh ${ssh_opts[*]} $(quote "$host") true"
            continue
        fi
        remote "$head" "ssh ${ssh_opts[*]} $(quote "$host") true" >/dev/null 2>&1 ||
            die "$head cannot reach $host by ssh without a password, which MPI's launcher there needs: set up a key (ssh-copy-id) from $head to $host"
    done
fi

# 3. Pick GPUs: on each host, $needed of them, $nodes per task.
declare -A picked_on=()
for host in "${hosts[@]}"; do
    picked=()
    if ((cpu)); then
        :
    elif [[ -n $gpu_ids ]]; then
        IFS=, read -r -a picked <<<"$gpu_ids"
        ((${#picked[@]} >= needed)) || die "--gpus=$gpu_ids has ${#picked[@]} GPU(s); $needed needed ($nodes per task x ${#tasks[@]} task(s))"
    elif ((dry_run)); then
        remote "$host" "${VSML_GPUSTAT:-gpustat} --json"
        for ((g = 0; g < needed; g++)); do picked+=("<free-$((g + 1))>"); done
    else
        report=$(ssh "${ssh_opts[@]}" "$host" "${VSML_GPUSTAT:-gpustat} --json") || die "'ssh $host ${VSML_GPUSTAT:-gpustat} --json' failed: is gpustat installed there? (pip install gpustat; or pass --gpus=IDS)"
        free=$(python3 "$SCRIPT_DIR/free_gpus.py" --max-memory "$max_gpu_memory" <<<"$report") || die "cannot read the gpustat output of $host"
        picked=()
        [[ -z $free ]] || IFS=, read -r -a picked <<<"$free"
        ((${#picked[@]} >= needed)) || die "$host has ${#picked[@]} free GPU(s) (${free:-none}); $needed needed ($nodes per task x ${#tasks[@]} task(s)); use fewer --nodes, --gpus=IDS or --max-gpu-memory"
    fi
    picked_on[$host]=$(IFS=,; echo "${picked[*]:0:needed}")
done

# 4. One tmux window per task, on the (first) host.
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
    where=""
    if ((multi)); then
        host_gpus=()
        for host in "${hosts[@]}"; do host_gpus+=("${picked_on[$host]}"); done
        job_args+=(--hosts "$(IFS=,; echo "${hosts[*]}")")
        ((cpu)) || job_args+=(--host-gpus "$(IFS=';'; echo "${host_gpus[*]}")")
        where="${#hosts[@]} hosts x $ranks rank(s)"
    else
        gpus=""
        if [[ -n ${picked_on[$head]} ]]; then
            IFS=, read -r -a picked <<<"${picked_on[$head]}"
            gpus=$(IFS=,; echo "${picked[*]:t*nodes:nodes}")
            job_args+=(--gpus "$gpus")
        fi
        where="${gpus:+GPUs $gpus, }$ranks rank(s)"
    fi
    window_command=$(quote bash ssh/job.sh "${job_args[@]}" -- "${command[@]}")
    if ((t == 0)); then
        tmux_args=(new-session -d -s "$session" -n "$window")
    else
        tmux_args=(new-window -d -t "$session:" -n "$window")
    fi
    # -c "$PWD" (expanded on the host): the window starts in the code directory.
    remote "$head" "cd $(quote "$remote_dir") && tmux $(quote "${tmux_args[@]}") -c \"\$PWD\" $(quote "$window_command")"
    summary+=("  $window: $where, run dir $remote_dir/$task_dir")
done

((dry_run)) && exit 0
echo "started ${#tasks[@]} task(s) on ${hosts[*]} in tmux session $session on $head:"
printf '%s\n' "${summary[@]}"
echo "attach:  ssh -t $head tmux attach -t $session    (next window: Ctrl-b n; detach: Ctrl-b d)"
echo "follow:  ssh $head tail -f $remote_dir/$run_dir/${tasks[0]:+task-${tasks[0]}/}output.log"
echo "fetch:   mkdir -p $run_dir && rsync -az $head:$remote_dir/$run_dir/ $run_dir/ && python3 -m vsml.plot $run_dir${tasks[0]:+/task-*}"
