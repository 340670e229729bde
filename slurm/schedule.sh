#!/usr/bin/env bash
# Submit a VSML command to Slurm: srun starts the ranks (through assign_gpu.py
# when GPUs are requested), the run checkpoints before the time limit, and
# chained jobs resume the same run directory.
#
# usage: bash slurm/schedule.sh [OPTIONS] -- COMMAND [ARG ...]
#
#   bash slurm/schedule.sh --nodes=7 --ntasks-per-node=12 -- python3 launch.py --config_files ...
#   bash slurm/schedule.sh --array=1-11 --nodes=32 -- python3 launch.py --array configs/array/datasets.yaml
#   bash slurm/schedule.sh --time=04:00:00 --chain=3 -- python3 launch.py --config_files ...
#
# Options (--opt=VALUE and --opt VALUE both work; environment defaults in []):
#   --nodes=N             nodes per job [1]
#   --ntasks-per-node=K   MPI ranks per node [1]
#   --time=T              time limit, e.g. 04:00:00 [VSML_TIME; else the partition's]
#   --array=SPEC          job array, e.g. 1-11 or 1-11%4; task i runs task i of the
#                         command's `--array` file (launch.py reads SLURM_ARRAY_TASK_ID)
#                         in RUN/task-i
#   --partition=P         [VSML_PARTITION]
#   --account=A           [VSML_ACCOUNT]
#   --constraint=C        [VSML_CONSTRAINT]
#   --gpus-per-node=G     request G GPUs per node (--gres=gpu:G) and pin each
#                         rank to one of them with assign_gpu.py [VSML_GPUS_PER_NODE; 0]
#   --cpus-per-task=C     [VSML_CPUS_PER_TASK]
#   --signal-before=S     send SIGUSR1 S seconds before the time limit, so the run
#                         writes a checkpoint and exits 0 [VSML_SIGNAL_SECONDS; 300]
#   --chain=K             submit K jobs, each starting after the previous one ended
#                         (--dependency=afterany); jobs 2..K resume RUN [1]
#   --run_dir=RUN         run directory [default: runs/<date>-<time>-<name>, <name>
#                         from the --array or first --config_files file]; also taken
#                         from a `--run_dir` in COMMAND. Slurm's output goes to
#                         RUN/slurm-<job>.out (RUN/slurm-<job>_<task>.out for arrays)
#   --job-name=NAME       [vsml-<name>]
#   --sbatch-arg=ARG      one more sbatch option, repeatable, e.g. --sbatch-arg=--mem=64G
#                         [VSML_SBATCH_ARGS, space-separated]
#   --dry-run             print the sbatch scripts and commands; submit nothing
#   -h, --help            this text
#
# COMMAND may also be `python3 launch.py --resume RUN ...`: every job then runs
# it unchanged (output in RUN). Inside the job, slurm/job.sh activates .venv
# (VSML_VENV, `none` to skip), sources VSML_SETUP if set, and passes
# VSML_SRUN_ARGS to srun (it adds --mpi=pmi2 unless they name another --mpi).
set -euo pipefail

readonly SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly PROG="slurm/schedule.sh"

# shellcheck source=../schedule_common.sh
source "$SCRIPT_DIR/../schedule_common.sh"

nodes=1
ntasks_per_node=1
time_limit=${VSML_TIME:-}
array=""
partition=${VSML_PARTITION:-}
account=${VSML_ACCOUNT:-}
constraint=${VSML_CONSTRAINT:-}
gpus_per_node=${VSML_GPUS_PER_NODE:-0}
cpus_per_task=${VSML_CPUS_PER_TASK:-}
signal_before=${VSML_SIGNAL_SECONDS:-300}
chain=1
run_dir=""
job_name=""
dry_run=0
sbatch_extra=()
if [[ -n ${VSML_SBATCH_ARGS:-} ]]; then read -r -a sbatch_extra <<<"$VSML_SBATCH_ARGS"; fi

while (($#)); do
    option=$1
    case $option in
        -h | --help) usage; exit 0 ;;
        --dry-run) dry_run=1; shift; continue ;;
        --) shift; break ;;
        --*=*) name=${option%%=*}; value=${option#*=}; shift ;;
        --*) name=$option; (($# >= 2)) || die "$name needs a value"; value=$2; shift 2 ;;
        *) die "unexpected '$option': the command goes after --" ;;
    esac
    case $name in
        --nodes) nodes=$value ;;
        --ntasks-per-node) ntasks_per_node=$value ;;
        --time) time_limit=$value ;;
        --array) array=$value ;;
        --partition) partition=$value ;;
        --account) account=$value ;;
        --constraint) constraint=$value ;;
        --gpus-per-node) gpus_per_node=$value ;;
        --cpus-per-task) cpus_per_task=$value ;;
        --signal-before) signal_before=$value ;;
        --chain) chain=$value ;;
        --run_dir | --run-dir) run_dir=$value ;;
        --job-name) job_name=$value ;;
        --sbatch-arg) sbatch_extra+=("$value") ;;
        *) die "unknown option '$name'" ;;
    esac
done
(($#)) || die "no command given after --; e.g. bash $PROG --nodes=2 -- python3 launch.py --config_files configs/quickstart.yaml"
command=("$@")

require_uint --nodes "$nodes"
require_uint --ntasks-per-node "$ntasks_per_node"
require_uint --gpus-per-node "$gpus_per_node" 0
require_uint --signal-before "$signal_before" 0
require_uint --chain "$chain"
[[ -z $cpus_per_task ]] || require_uint --cpus-per-task "$cpus_per_task"
[[ -z $array || $array =~ ^[0-9][0-9,:%-]*$ ]] || die "--array must look like 1-11, 1,3,5 or 1-11%4, got '$array'"

# A --run_dir in the command becomes RUN (job.sh adds it back, per task).
scan_command

if [[ -n $array && -z $array_file ]]; then
    die "--array=$array needs a command with '--array FILE' (launch.py picks task SLURM_ARRAY_TASK_ID of FILE)"
fi
if ((chain > 1 && !has_launcher)); then
    die "--chain needs a '... launch.py ...' command (later jobs run launch.py --resume)"
fi
if [[ -n $resume_dir ]]; then
    [[ -z $array ]] || die "--array cannot be combined with a '--resume' command"
    [[ -z $run_dir || $run_dir == "$resume_dir" ]] || die "the command resumes $resume_dir but --run_dir is $run_dir"
    run_dir=$resume_dir
fi

name=run
[[ -n $first_config ]] && name=$(basename -- "${first_config%.*}")
[[ -n $array_file ]] && name=$(basename -- "${array_file%.*}")
[[ -n $job_name ]] || job_name="vsml-$name"
[[ -n $run_dir ]] || run_dir="runs/$(date +%Y%m%d-%H%M%S)-$name"
if [[ -z $resume_dir ]]; then
    for checkpoint in checkpoint.npz checkpoint.prev.npz; do
        [[ ! -f $run_dir/$checkpoint ]] || die "$run_dir already holds a run; continue it with: bash $PROG [OPTIONS] -- python3 launch.py --resume $run_dir"
    done
fi
run_abs=$run_dir
[[ $run_abs == /* ]] || run_abs=$PWD/$run_dir
log_pattern=slurm-%j.out
[[ -n $array ]] && log_pattern=slurm-%A_%a.out

# The batch script of job K of the chain (K = 1..chain).
batch_script() {
    local k=$1 job_args=()
    [[ -n $resume_dir ]] || job_args+=(--run-dir "$run_dir")
    ((k > 1 && ${#resume_dir} == 0)) && job_args+=(--resume)
    ((gpus_per_node > 0)) && job_args+=(--gpus)
    echo "#!/bin/bash"
    echo "#SBATCH --job-name=$job_name"
    echo "#SBATCH --nodes=$nodes"
    echo "#SBATCH --ntasks-per-node=$ntasks_per_node"
    [[ -z $time_limit ]] || echo "#SBATCH --time=$time_limit"
    [[ -z $array ]] || echo "#SBATCH --array=$array"
    [[ -z $partition ]] || echo "#SBATCH --partition=$partition"
    [[ -z $account ]] || echo "#SBATCH --account=$account"
    [[ -z $constraint ]] || echo "#SBATCH --constraint=$constraint"
    ((gpus_per_node == 0)) || echo "#SBATCH --gres=gpu:$gpus_per_node"
    [[ -z $cpus_per_task ]] || echo "#SBATCH --cpus-per-task=$cpus_per_task"
    ((signal_before == 0)) || echo "#SBATCH --signal=B:USR1@$signal_before"
    echo "#SBATCH --output=$run_abs/$log_pattern"
    echo "#SBATCH --chdir=$PWD"
    local extra
    for extra in "${sbatch_extra[@]}"; do echo "#SBATCH $extra"; done
    echo "# job $k of $chain; written by $PROG"
    echo "exec bash $(quote "$SCRIPT_DIR/job.sh" "${job_args[@]}") -- $(quote "${command[@]}")"
}

if ((dry_run)); then
    echo "# dry run: nothing is submitted. Run directory: $run_dir"
    for ((k = 1; k <= chain; k++)); do
        dependency=""
        ((k == 1)) || dependency="--dependency=afterany:<job $((k - 1))> "
        echo
        echo "# job $k of $chain: sbatch ${dependency}$run_dir/sbatch-$k.sh, with $run_dir/sbatch-$k.sh:"
        batch_script "$k"
    done
    exit 0
fi

# sbatch's messages as one line, without its "sbatch: error: " prefixes.
one_line() {
    local text
    text=$(sed -e 's/^sbatch: error: //' -e 's/^sbatch: //' <<<"$1" | grep -v '^[[:space:]]*$' | paste -sd ';' -)
    echo "${text//;/; }"
}

# Slurm refused the job: one line with its own words, exit 2 (no --help hint: the usage was right).
refused() {
    echo "$PROG: error: Slurm refused the job, nothing submitted: $*" >&2
    exit 2
}

command -v sbatch >/dev/null || die "sbatch not found: run this on a Slurm login node (or use --dry-run)"
# Ask Slurm first (sbatch --test-only submits nothing): a refused partition, account or --time
# must not leave half a chain queued or a run directory behind.
if ! output=$(batch_script 1 | sbatch --test-only 2>&1); then
    refused "$(one_line "$output")"
fi
made_run_dir=0
[[ -d $run_dir ]] || made_run_dir=1
mkdir -p -- "$run_dir"
job_ids=()
for ((k = 1; k <= chain; k++)); do
    script_file=$run_dir/sbatch-$k.sh
    batch_script "$k" >"$script_file"
    sbatch_args=()
    ((k == 1)) || sbatch_args+=("--dependency=afterany:${job_ids[-1]}")
    if ! output=$(sbatch "${sbatch_args[@]}" "$script_file" 2>&1); then
        # Take back what this call queued, so a refusal leaves nothing behind.
        ((${#job_ids[@]} == 0)) || scancel "${job_ids[@]}" 2>/dev/null || true
        ((made_run_dir == 0)) || rm -rf -- "$run_dir"
        refused "$(one_line "$output") (job $k of $chain${job_ids[*]:+; cancelled ${job_ids[*]}})"
    fi
    [[ $output =~ Submitted\ batch\ job\ ([0-9]+) ]] || die "cannot read a job id from sbatch's output: $output"
    job_ids+=("${BASH_REMATCH[1]}")
    echo "submitted job ${job_ids[-1]} ($k of $chain)${sbatch_args:+ after job ${job_ids[-2]}}: $script_file"
done

log_example=${log_pattern//%j/${job_ids[0]}}
log_example=${log_example//%A/${job_ids[0]}}
log_example=${log_example//%a/${array%%[-,:%]*}}
echo "run directory: $run_dir${array:+ (task i in $run_dir/task-i)}"
echo "follow:        tail -f $run_dir/$log_example"
echo "queue:         squeue -u \$USER    cancel: scancel ${job_ids[*]}"
echo "checkpoint and stop a running job early: scancel --batch --signal=USR1 JOB_ID"
