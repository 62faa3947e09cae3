#!/usr/bin/env bash
# The GPU benchmark of issue 16 as one prepared run (docs/performance.md, "Running the GPU check").
#
# On a GPU machine whose python3 has torch (and transformers, numpy, pillow, httpx ...) but not
# diffusers or pydantic: installs the wheels carried in .wheels/ (benchmarks/gpu_wheels.sh makes
# them) and mediagen from this tree into /tmp/site, then runs, in order of what matters most, each
# stage under a hard time limit so that what finished is kept:
#   1. SD1.5 architecture, 512 px, 30 steps, fp16: raw sequential vs 16 concurrent through the SDK,
#      single-request overhead, then with --speed (channels_last + torch.compile);
#   2. warm restart: a fresh process with the compile caches stage 1 left, to its first 16-image
#      batch (same settings and shapes as stage 1's --speed stage);
#   3. the approximate modes (step caches, fp8) on a FLUX.1-architecture model: speed-up and
#      PSNR/SSIM against the exact path on the same seeds.
# Writes gpu-<device>-<date>.json (and each stage's JSON and log) to $OUT, or to
# benchmarks/results/ when $OUT is unset; commit the merged file as benchmarks/results/.
#
#   benchmarks/gpu_check.sh [--dry-run] [--budget-s 560] [--approx first-block:0.3,fp8,faster] [-- ARGS]
#
# ARGS after `--` go to every local_throughput.py run (e.g. `-- --threads 1` on a small CPU).
#
# --dry-run: shrunken models on whatever device there is (the CPU here), no --speed and no compile
# in the restart stage: checks the script end to end without a GPU.
set -uo pipefail

DRY_RUN=0
BUDGET_S=560
APPROX="first-block:0.3,fp8,faster"
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; PASS=("$@"); break ;;
        --dry-run) DRY_RUN=1 ;;
        --budget-s) BUDGET_S="${2:?--budget-s needs seconds}"; shift ;;
        --approx) APPROX="${2:?--approx needs modes}"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$BUDGET_S" in ''|*[!0-9]*) echo "gpu_check.sh: --budget-s wants whole seconds" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
DEST="${OUT:-$ROOT/benchmarks/results}"
mkdir -p "$DEST"
START=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mediagen-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# One compile cache for every stage: stage 2 restarts into what stage 1 compiled.
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor-cache"

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
log() { echo "[gpu_check $(( $(date +%s) - START )) s] $*"; }

# 0. Packages: only what is missing, from the carried wheels and this tree; nothing is downloaded.
if ! "$PY" -c "import diffusers, pydantic, mediagen_diffusers, mediagen_testkit" 2>/dev/null; then
    if [ ! -d .wheels ]; then
        echo "gpu_check.sh: diffusers/pydantic missing and no .wheels/ (run benchmarks/gpu_wheels.sh here first)" >&2
        exit 3
    fi
    log "installing the carried wheels and mediagen into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .wheels/*.whl || exit 4
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . ./testkit || exit 4
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF' || exit 5
import torch, diffusers, transformers, mediagen_diffusers  # noqa: F401
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("diffusers", diffusers.__version__, "transformers", transformers.__version__)
EOF

if [ "$DRY_RUN" = 1 ]; then
    # No compiling on a CPU (minutes on a small one): the eager paths and the script are what is checked.
    MODE=(--gpu --dry-run --rounds 1 --single-reps 2 --requests 4 --max-batch 4)
    SPEED=()
    RESTART='{}'
else
    MODE=(--gpu --rounds 2)
    SPEED=(--speed)
    RESTART='{"channels_last": true, "compile": "full"}'
fi

# Run one stage under a hard limit (what it wrote survives a timeout); $1 names it.
stage() {
    local name="$1" limit="$2"; shift 2
    if [ "$limit" -lt 30 ]; then log "$name: skipped (${limit} s left)"; return; fi
    log "$name: up to ${limit} s"
    # Without OUT: local_throughput.py would also write its own copy there (the tool returns 8 files).
    env -u OUT timeout --kill-after=10 "$limit" "$PY" benchmarks/local_throughput.py "${MODE[@]}" --model-dir "$WORK/models" \
        --budget-s $(( limit * 6 / 10 )) --out "$DEST/$name.json" "$@" ${PASS[@]+"${PASS[@]}"} >"$DEST/$name.log" 2>&1
    log "$name: exit $? ($(grep -c . "$DEST/$name.log") log lines, json: $([ -f "$DEST/$name.json" ] && echo yes || echo no))"
}

# Stage limits: what is left, shared out so that a slow first stage cannot starve the others.
stage sd15 $(( $(left) * 62 / 100 )) ${SPEED[@]+"${SPEED[@]}"}
# One restart only: stage 1 compiled the same model, settings and batch, so its caches are there
# (the cold figure is stage 1's speed.sdk_warmup_s, in a process that had already loaded torch).
stage restart $(( $(left) * 45 / 100 )) --approx-only --warm-restart --restart-runs 1 --restart-settings "$RESTART"
stage approx $(( $(left) - 15 )) --approx-only --approx "$APPROX" --rounds 1

# One file: stage 1's row, plus warm_restart_s and approx{} from the others.
"$PY" - "$DEST" <<'EOF'
import datetime, json, pathlib, re, sys

dest = pathlib.Path(sys.argv[1])
row: dict = {}
for name in ("sd15", "restart", "approx"):
    path = dest / f"{name}.json"
    if not path.is_file():
        row.setdefault("missing_stages", []).append(name)
        continue
    part = json.loads(path.read_text())
    if part.pop("partial", False):  # stopped by its time limit: what it had measured by then
        row.setdefault("partial_stages", []).append(name)
    for key, value in part.items():
        row.setdefault(key, value)
row.setdefault("warm_restart_s", None)
row["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
device = re.sub(r"[^a-z0-9]+", "-", str(row.get("device", "unknown")).lower()).strip("-")
out = dest / f"gpu-{device}-{row['date'][:10]}.json"
out.write_text(json.dumps(row, indent=1) + "\n")
print(f"wrote {out}")
print(json.dumps({k: row.get(k) for k in ("device", "mode", "raw_sequential_images_per_s", "sdk_concurrent_images_per_s", "ratio", "speed", "warm_restart_s", "missing_stages", "partial_stages")}))
EOF
log "done"
