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
