#!/usr/bin/env bash
# kill -9 soak: trains, checkpoints and predicts on the bundled demo data, killing the process
# with SIGKILL at random moments, then checks that every file left on disk either loads or is
# refused with a clear message (exit 1, no panic), and that concurrent runs never share a
# folder. Not a CI test: it runs for minutes. Usage:
#
#   scripts/kill_soak.sh [ROUNDS]        (default 20; VOXREG=path/to/voxreg to pick a binary)
#
# It prints one line per check and a summary; it exits 1 on the first broken promise, keeping
# its work folder for a look.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1
voxreg=${VOXREG:-$repo/target/debug/voxreg}
rounds=${1:-20}
work=$(mktemp -d -t voxreg-soak-XXXXXX)
logs=$work/logs
loaded=0
refused=0

fail() {
    echo "FAIL: $*" >&2
    echo "work folder kept: $work" >&2
    exit 1
}

# Runs a command that must exit 0, or 1 with a message and no panic; counts which.
loads_or_refuses() {
    local what=$1
    shift
    local err=$work/stderr.txt
    "$@" >/dev/null 2>"$err"
    local code=$?
    if grep -q -e "panicked at" -e "RUST_BACKTRACE" "$err"; then
        fail "$what: panic: $(cat "$err")"
    fi
    case $code in
        0) loaded=$((loaded + 1)) ;;
        1)
            [ -s "$err" ] || fail "$what: exit 1 without a message"
            refused=$((refused + 1))
            echo "  refused $what: $(head -c 300 "$err" | tr '\n' ' ')"
            ;;
        *) fail "$what: exit $code: $(cat "$err")" ;;
    esac
}

# Starts "$@" in the background, kills it with SIGKILL after a random 0.2–4 s.
kill_at_random() {
    "$@" >/dev/null 2>&1 &
    local pid=$!
    sleep "$((RANDOM % 4)).$((RANDOM % 10))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

[ -x "$voxreg" ] || fail "no voxreg binary at $voxreg (cargo build --bin voxreg)"
sed -e 's/\[32, 32, 32\]/[16, 16, 16]/g' \
    -e 's/num_channel_initial: 8/num_channel_initial: 2/' \
    -e 's/extract_levels: \[0, 1, 2, 3\]/extract_levels: [0, 1, 2]/' \
    -e 's/epochs: 20/epochs: 10000/' \
    -e 's/save_period: 10/save_period: 1/' \
    -e "s#dir: demo/#dir: $repo/demo/#" \
    "$repo/configs/quickstart.yaml" >"$work/soak.yaml"

echo "soak: $rounds rounds of train / kill -9 / check in $work"
for round in $(seq 1 "$rounds"); do
    latest=$(find "$logs" -path '*/save/ckpt-*' -name 'ckpt-*' -type d 2>/dev/null | sort -V | tail -1)
    resume=()
    [ -n "$latest" ] && resume=(--ckpt-path "$latest")
    kill_at_random "$voxreg" train -c "$work/soak.yaml" --log-dir "$logs" --exp-name "round-$round" "${resume[@]}"
    # Every checkpoint on disk is checked once, after the kill that may have damaged it.
    for ckpt in $(find "$logs" -path '*/save/*' -maxdepth 4 -mindepth 3 -type d -name 'ckpt-*' | sort -V); do
        grep -qxF "$ckpt" "$work/checked.txt" 2>/dev/null && continue
        echo "$ckpt" >>"$work/checked.txt"
        loads_or_refuses "predict from $ckpt" "$voxreg" predict --ckpt-path "$ckpt" --split test \
            --log-dir "$work/predicted" --exp-name "r$round-$(basename "$(dirname "$(dirname "$ckpt")")")-$(basename "$ckpt")" --no-png
    done
    for partial in $(find "$logs" -name '*.partial*'); do
        echo "  left behind: $partial"
    done
    # A predict killed part-way: every image it left loads or is refused, and its folder is
    # never reused.
    if [ -n "$latest" ]; then
        kill_at_random "$voxreg" predict --ckpt-path "$latest" --split test --log-dir "$work/killed" --exp-name "r$round"
        for image in $(find "$work/killed/r$round" -name '*.nii.gz' 2>/dev/null | head -20); do
            case $image in
                *ddf*) loads_or_refuses "field $image" "$voxreg" warp -i "$repo/$(find demo/data/paired/test/fixed_images -name '*.nii.gz' | head -1)" \
                    -d "$image" -o "$work/warped-$round-$RANDOM.nii.gz" ;;
                *) loads_or_refuses "image $image" "$voxreg" vis -m 0 -i "$image" -s "$work/vis/r$round-$RANDOM" ;;
            esac
        done
        loads_or_refuses "predict into the killed run's folder" "$voxreg" predict --ckpt-path "$latest" \
            --split test --log-dir "$work/killed" --exp-name "r$round" --no-png
    fi
    echo "round $round: checkpoints so far $(find "$logs" -path '*/save/ckpt-*' -type d -name 'ckpt-*' | wc -l), loaded $loaded, refused $refused"
done

echo "concurrent runs with one --exp-name:"
"$voxreg" train -c "$work/soak.yaml" --log-dir "$work/same" --exp-name shared --max-epochs 1 >/dev/null 2>"$work/a.err" &
a=$!
"$voxreg" train -c "$work/soak.yaml" --log-dir "$work/same" --exp-name shared --max-epochs 1 >/dev/null 2>"$work/b.err" &
b=$!
wait $a
code_a=$?
wait $b
code_b=$?
[ "$((code_a + code_b))" -eq 1 ] || fail "two runs named shared: exits $code_a and $code_b (one must win, one be refused)"
grep -h -v '^$' "$work/a.err" "$work/b.err" | grep -i -e "shared" | head -2 | sed 's/^/  /'

echo "concurrent runs with default names:"
"$voxreg" train -c "$work/soak.yaml" --log-dir "$work/default" --max-epochs 1 >/dev/null 2>&1 &
a=$!
"$voxreg" train -c "$work/soak.yaml" --log-dir "$work/default" --max-epochs 1 >/dev/null 2>&1 &
b=$!
wait $a || fail "a default-named run failed"
wait $b || fail "a default-named run failed"
folders=$(find "$work/default" -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$folders" -eq 2 ] || fail "two default-named runs made $folders folders"
echo "  two folders: $(cd "$work/default" && ls | tr '\n' ' ')"

echo "soak passed: $rounds kills in training, checkpoints loaded $loaded times, refused $refused times, no panic"
rm -rf "$work"
