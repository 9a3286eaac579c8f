#!/usr/bin/env bash
# Developer tasks for voxreg on Debian/Ubuntu. Installs what is missing, then runs the task.
#
#   ./tasks.sh demo   build voxreg, train the quick-start model on the bundled demo data, report
#   ./tasks.sh hypermorph  build the 2D HyperMorph demo data, train configs/hypermorph.yaml,
#                     and sweep lambda over the test split
#   ./tasks.sh dlir   build the 2D tile demo data, train configs/dlir_affine_2d.yaml, then the
#                     B-spline stage of configs/dlir_cascade_2d.yaml on the frozen affine stage,
#                     and evaluate both on the test tiles (field error against the known shifts)
#   ./tasks.sh atlalign  build the 2D atlalign demo data (voxreg dataset augment), train
#                     configs/atlalign_global.yaml and configs/atlalign_local.yaml, merge them
#                     with configs/atlalign_merged.yaml, and evaluate each on the test sections
#   ./tasks.sh test   run the whole test suite (what CI runs)
#   ./tasks.sh lint   rustfmt, framework feature pins and clippy checks
#   ./tasks.sh peer   compare losses, ops and metrics with MONAI, PyTorch and DeepReg's formulas
#                     (tests/peer; a Python venv with tests/peer/requirements.txt in
#                     target/peer-venv, or the interpreter named by VOXREG_PEER_PYTHON)
#   ./tasks.sh fuzz [RUNS [TARGET…]]  write the seed corpora, then run each fuzz target (fuzz/,
#                     nightly Rust and cargo-fuzz) for RUNS executions (default 1000000)
#   ./tasks.sh soak [ROUNDS]  the kill -9 soak of training, checkpoints and predict
#                     (scripts/kill_soak.sh)
#   ./tasks.sh deps   only install the system packages and the Rust toolchain
set -euo pipefail
cd "$(dirname "$0")"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_system_packages() {
    local missing=()
    for package in libhdf5-dev pkg-config gcc libc6-dev; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

install_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "installing the Rust toolchain with rustup" >&2
        command -v curl >/dev/null 2>&1 || as_root apt-get install -y -qq curl ca-certificates
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if command -v rustup >/dev/null 2>&1; then
        # Read the whole list before matching: `grep -q` stopping early would break the pipe.
        local components
        components="$(rustup component list --installed 2>/dev/null || true)"
        grep -q '^clippy' <<<"$components" || rustup component add clippy rustfmt
    fi
}

# Every crate the framework depends on must get the same features whether cargo builds a
# plugin on its own or the voxreg binary: otherwise the two builds hash the framework
# differently and the plugin cannot load. Names the crates whose features differ, so the
# fix (a pin in framework/Cargo.toml) is one line.
check_framework_feature_pins() {
    local framework_deps plugin_alone binary_alone differ=0
    framework_deps="$(cargo tree -p voxreg-framework -e normal,build --prefix none -f '{p}' \
        | sed 's/ (\*)//' | awk '{print $1" "$2}' | sort -u)"
    plugin_alone="$(cargo tree -p custom_backbone -e normal,build --prefix none -f '{p} [{f}]' | sort -u)"
    binary_alone="$(cargo tree -p voxreg -e normal,build --prefix none -f '{p} [{f}]' | sort -u)"
    while read -r name version; do
        local in_plugin in_binary
        in_plugin="$(grep -m1 "^$name $version " <<<"$plugin_alone" || true)"
        in_binary="$(grep -m1 "^$name $version " <<<"$binary_alone" || true)"
        if [ "$in_plugin" != "$in_binary" ]; then
            echo "feature pin needed in framework/Cargo.toml: plugin alone builds '$in_plugin'," \
                "the binary builds '$in_binary'" >&2
            differ=1
        fi
    done <<<"$framework_deps"
    return "$differ"
}

task="${1:-}"
case "$task" in
    deps)
        install_system_packages
        install_rust
        ;;
    demo)
        install_system_packages
        install_rust
        cargo build --release --bin voxreg
        logs="target/demo-logs"
        rm -rf "$logs/quickstart"
        echo "== training configs/quickstart.yaml on the bundled MNI demo data (demo/data), then testing it"
        ./target/release/voxreg train --config-path configs/quickstart.yaml --exp-name quickstart --log-dir "$logs"
        ;;
    hypermorph)
        install_system_packages
        install_rust
        cargo build --release --bin voxreg
        voxreg=./target/release/voxreg
        data="demo/data/hypermorph_2d"
        logs="target/demo-logs"
        if [ ! -d "$data" ]; then
            echo "== building $data: axial slices of the bundled MNI brain under random smooth warps"
            "$voxreg" dataset from-template --template assets/mni152/t1.nii.gz \
                --label assets/mni152/gm.nii.gz --label assets/mni152/wm.nii.gz \
                --slice 2,40 --crop-start 0,4 --crop-size 80,80 --shape 64,64 \
                --pairs 40,8,8 --field-strength 3 --low-res-size 5,5 --seed 14 --no-fields \
                --out "$data"
        fi
        rm -rf "$logs/hypermorph" "$logs/hypermorph-sweep"
        echo "== training configs/hypermorph.yaml (one model for every lambda)"
        "$voxreg" train --config-path configs/hypermorph.yaml --exp-name hypermorph --log-dir "$logs"
        last="$(ls -d "$logs"/hypermorph/save/ckpt-* | sort -t- -k2 -n | tail -1)"
        echo "== sweeping lambda over the test split with $last"
        "$voxreg" predict --ckpt-path "$last" --split test --hyper lambda=0:1:11 --no-nifti \
            --exp-name hypermorph-sweep --log-dir "$logs"
        ;;
    dlir)
        install_system_packages
        install_rust
        cargo build --release --bin voxreg
        voxreg=./target/release/voxreg
        data="demo/data/tiles_2d"
        logs="target/demo-logs"
        if [ ! -d "$data" ]; then
            echo "== building $data: 3 x 3 mosaics of 32 x 32 tiles at known origins from an axial MNI plane"
            "$voxreg" dataset tiles --image assets/mni152/t1.nii.gz --slice 2,40 --tile 32,32 \
                --grid 3,3 --overlap 0.9 --jitter 2 --mosaics 64,4,8 --seed 1 --out "$data"
        fi
        rm -rf "$logs/dlir_affine_2d" "$logs/dlir_cascade_2d" "$logs/dlir_affine_2d-test" \
            "$logs/dlir_cascade_2d-test"
        mkdir -p "$logs"
        echo "== training the affine stage: configs/dlir_affine_2d.yaml"
        "$voxreg" train --config-path configs/dlir_affine_2d.yaml --exp-name dlir_affine_2d --log-dir "$logs"
        affine="$(ls -d "$logs"/dlir_affine_2d/save/ckpt-* | sort -t- -k2 -n | tail -1)"
        "$voxreg" predict --ckpt-path "$affine" --split test --no-nifti \
            --exp-name dlir_affine_2d-test --log-dir "$logs"
        stage0="$logs/dlir_stage0.yaml"
        printf 'train:\n  parameters:\n    name: variables\n    freeze: [stage.0]\n    init_from: [{checkpoint: %s, from: "", to: stage.0}]\n' \
            "$affine" >"$stage0"
        echo "== training the B-spline stage on the frozen affine stage: configs/dlir_cascade_2d.yaml"
        "$voxreg" train --config-path configs/dlir_cascade_2d.yaml --config-path "$stage0" \
            --exp-name dlir_cascade_2d --log-dir "$logs"
        cascade="$(ls -d "$logs"/dlir_cascade_2d/save/ckpt-* | sort -t- -k2 -n | tail -1)"
        "$voxreg" predict --ckpt-path "$cascade" --split test --no-nifti \
            --exp-name dlir_cascade_2d-test --log-dir "$logs"
        ;;
    atlalign)
        install_system_packages
        install_rust
        cargo build --release --bin voxreg
        voxreg=./target/release/voxreg
        data="demo/data/atlalign_2d"
        logs="target/demo-logs"
        if [ ! -d "$data" ]; then
            echo "== building $data: coronal MNI sections under known random affine + smooth warps"
            "$voxreg" dataset augment --reference assets/mni152/t1.nii.gz \
                --label assets/mni152/gm.nii.gz --label assets/mni152/wm.nii.gz --axis 1 --shape 64,80 \
                --sections 12,3,3 --samples-per-section 4 --seed 2026 --out "$data"
        fi
        rm -rf "$logs/atlalign_global" "$logs/atlalign_local" "$logs/atlalign_merged" \
            "$logs/atlalign_global-test" "$logs/atlalign_local-test" "$logs/atlalign_merged-test"
        mkdir -p "$logs"
        for model in global local; do
            echo "== training configs/atlalign_$model.yaml"
            "$voxreg" train --config-path "configs/atlalign_$model.yaml" --exp-name "atlalign_$model" \
                --log-dir "$logs"
            last="$(ls -d "$logs/atlalign_$model"/save/ckpt-* | sort -t- -k2 -n | tail -1)"
            "$voxreg" predict --ckpt-path "$last" --split test --no-nifti \
                --exp-name "atlalign_$model-test" --log-dir "$logs"
        done
        global="$(ls -d "$logs"/atlalign_global/save/ckpt-* | sort -t- -k2 -n | tail -1)"
        local_="$(ls -d "$logs"/atlalign_local/save/ckpt-* | sort -t- -k2 -n | tail -1)"
        stages="$logs/atlalign_stages.yaml"
        printf 'train:\n  parameters:\n    name: variables\n    freeze: [stage.0]\n    init_from:\n      - {checkpoint: %s, from: "", to: stage.0}\n      - {checkpoint: %s, from: "", to: stage.1}\n' \
            "$global" "$local_" >"$stages"
        echo "== merging them: configs/atlalign_merged.yaml (global frozen, local fine-tuned)"
        "$voxreg" train --config-path configs/atlalign_merged.yaml --config-path "$stages" \
            --exp-name atlalign_merged --log-dir "$logs"
        merged="$(ls -d "$logs"/atlalign_merged/save/ckpt-* | sort -t- -k2 -n | tail -1)"
        "$voxreg" predict --ckpt-path "$merged" --split test --no-nifti \
            --exp-name atlalign_merged-test --log-dir "$logs"
        ;;
    test)
        install_system_packages
        install_rust
        log="$(mktemp)"
        trap 'rm -f "$log"' EXIT
        status=0
        cargo test --workspace 2>&1 | tee "$log" || status=$?
        # One closing line over every test binary (cargo prints one result line per binary).
        awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
             END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
        exit "$status"
        ;;
    lint)
        install_system_packages
        install_rust
        cargo fmt --all -- --check
        check_framework_feature_pins
        cargo clippy --workspace --all-targets -- -D warnings
        ;;
    peer)
        install_system_packages
        install_rust
        python="${VOXREG_PEER_PYTHON:-}"
        if [ -z "$python" ]; then
            venv="target/peer-venv"
            [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet -r tests/peer/requirements.txt
            "$venv/bin/pip" install --quiet --no-deps -r tests/peer/requirements-lpips.txt
            python="$venv/bin/python"
        fi
        "$python" tests/peer/run.py "${@:2}"
        ;;
    fuzz)
        install_system_packages
        install_rust
        command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
        runs="${2:-1000000}"
        targets=("${@:3}")
        cargo run --example fuzz_seeds
        cd fuzz
        cargo +nightly fuzz build -s none
        [ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
        for target in "${targets[@]}"; do
            echo "fuzz: $target, $runs runs"
            cargo +nightly fuzz run -s none "$target" -- -runs="$runs" -max_len=131072 \
                -rss_limit_mb=4096 -timeout=30 -print_final_stats=1
        done
        ;;
    soak)
        install_system_packages
        install_rust
        cargo build --bin voxreg
        scripts/kill_soak.sh "${2:-20}"
        ;;
    *)
        echo "usage: $0 demo|hypermorph|dlir|atlalign|test|lint|peer|fuzz|soak|deps" >&2
        exit 2
        ;;
esac
