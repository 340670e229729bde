# Shell helpers shared by slurm/schedule.sh and ssh/schedule.sh (sourced, not run).
# The sourcing script sets PROG (its name in messages) before sourcing.

# Prints the sourcing script's header comment (lines 2 up to `set -euo`) as its help.
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
    echo "$PROG: error: $*" >&2
    echo "run 'bash $PROG --help' for usage" >&2
    exit 2
}

require_uint() {  # NAME VALUE [MIN]: an integer >= MIN (default 1)
    [[ $2 =~ ^[0-9]+$ ]] && (($2 >= ${3:-1})) || die "$1 must be an integer >= ${3:-1}, got '$2'"
}

# Shell-quoted words: safe to paste, and to pass through ssh and tmux.
quote() {
    local out="" word
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            out+="$word "
        else
            out+="'${word//\'/\'\\\'\'}' "
        fi
    done
    printf '%s' "${out% }"
}

# Reads the launch.py command in the array `command`: removes its --run_dir (the scheduler
# adds one per task) into `run_dir`, and records `resume_dir`, `array_file`, `first_config`
# (the first --config_files file), and 0/1 flags `has_launcher` (a *launch.py word),
# `resume_given` (--resume, with or without a value) and `task_given` (--task).
scan_command() {
    resume_dir="" array_file="" first_config="" has_launcher=0 resume_given=0 task_given=0
    local kept=() i=0 word next
    while ((i < ${#command[@]})); do
        word=${command[i]}
        next=${command[i + 1]:-}
        case $word in
            *launch.py) has_launcher=1 ;;
            --run_dir=*) run_dir=${word#*=}; ((i += 1)); continue ;;
            --run_dir) [[ -n $next ]] || die "--run_dir in the command needs a value"; run_dir=$next; ((i += 2)); continue ;;
            --resume=*) resume_dir=${word#*=}; resume_given=1 ;;
            --resume) resume_dir=$next; resume_given=1 ;;
            --array=*) array_file=${word#*=} ;;
            --array) array_file=$next ;;
            --config_files) first_config=$next ;;
            --task | --task=*) task_given=1 ;;
        esac
        kept+=("$word")
        ((i += 1))
    done
    command=("${kept[@]}")
}
