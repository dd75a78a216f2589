#!/usr/bin/env bash
# One training burst on a lent GPU machine (the `device` tool), checkpoint in, checkpoint out.
#
#   bash scripts/gpu_burst.sh pack            # here: .burst/ = training photos (lossless WebP) + wheels
#   bash scripts/gpu_burst.sh run MINUTES     # there, from the repo root, with .burst carried
#   bash scripts/gpu_burst.sh more MINUTES    # there, a second call on the warm machine: resume
#   bash scripts/gpu_burst.sh unpack DIR RUN  # here: DIR = one width's files (OUT/mM) -> RUN/burst.pt
#
# The device machine has torch but not compressai, and must not receive more than 64 MiB, so
# `pack` sends only the 2x downscales (as lossless WebP; photos a package stores as WebP go as
# those bytes) and `run` makes the 3x/4x ones there,
# and the run starts from .burst/init.pt (`pack` writes the default model's weights there):
# models/ (60 MB) does not fit beside it, so move models/ aside for the device call.
# MS (default c320) lists variants trained side by side from that start, each width >= its M
# (scripts.train.widen_latent); each returns a weights-only checkpoint under $OUT/mM/, in parts
# under 16 MiB (the transfer's per-file limit). A width with a "t" suffix (MS="320 320t") trains
# with synthetic text on a share TEXT (default 0.3) of the crops, into $OUT/mMt/; a "c" prefix
# (MS="320 c320") adds the channel-conditional context (SLICES groups, default 5), into $OUT/mcM/.
# An "h" suffix (MS="c320 c320h") raises lambda_max to LMBDA_HI (default 1.0; others LMBDA_MAX,
# default 0.36), the gains remapped by scripts.train.remap_gains, into $OUT/mcMh/. An "a" suffix
# widens g_a's hidden layers to NA (default 192; scripts.train.widen_hidden), into $OUT/mcMa/.
# A "w" suffix widens g_s's last hidden stage to NS (default 192; train.py --Ns, session 19: g_s
# caps the top end), into $OUT/mcMw/; "c320wf" trains it with g_s alone in bf16.
# An "s" suffix on a context variant codes its first SPATIAL groups (default 3) in two checkerboard
# passes (train.py --spatial-groups; the new networks start at zero), into $OUT/mcMs/.
# An "f" suffix keeps g_a and h_a in float32 (TF32) and autocasts g_s alone (train.py --bf16
# synthesis; session 13 found bf16 analysis gradients drift the model on the CPU), into $OUT/mcMf/.
# An "e" suffix trains g_a, h_a and z_gain alone (train.py --encoder-only), into $OUT/mcMe/: the
# result ships as the default model's encoder weights (export_model --encoder-for), so every
# file it wrote still decodes (session 16). It must keep the model's architecture: MS="c320e".
# AREA_POWER and SHAPES (train.py --area-power, --shapes: synthetic shaded shapes, session 14)
# apply to every variant.
set -euo pipefail
mode=${1:?pack|run|unpack}

case "$mode" in
pack)
    rm -rf .burst && mkdir -p .burst/data/prepared/train .burst/data/prepared/val .burst/whl
    grep -qx '/.burst/' .git/info/exclude || echo '/.burst/' >> .git/info/exclude
    .venv/bin/python - <<'EOF'
import shutil
from pathlib import Path
from PIL import Image
from scripts.fetch_data import OPTIONAL_MANIFESTS, manifest_rows, photo_stem, source_file
# Photos the package already stores as WebP (inside Qt bundles, session 15) travel as those
# bytes, NAME_x1.webp, smaller than a lossless 2x; fetch_data left them under data/debs.
webp = {photo_stem(r): r for r in manifest_rows(OPTIONAL_MANIFESTS) if r["source_path"].endswith(".webp")}
for split, pattern in (("train", "*_x2.png"), ("val", "*_x4.png")):
    for f in sorted(Path("data/prepared", split).glob(pattern)):
        name = f.stem[:-3]
        if split == "train" and name in webp:
            shutil.copyfile(source_file(webp[name], Path("data/debs")),
                            Path(".burst/data/prepared", split, name + "_x1.webp"))
        else:
            Image.open(f).save(Path(".burst/data/prepared", split, f.stem + ".webp"), lossless=True, method=4)
EOF
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 -d .burst/whl compressai==1.2.8
    python3 -m pip download -q --no-deps --only-binary=:all: -d .burst/whl pytorch-msssim==1.0.0
    .venv/bin/python - <<'EOF'
import json, os
import torch
from safetensors.torch import load
from codec.zoo import DEFAULT_MODEL, encoder_weights, models_dir, read_weights, weights_path
model_id = os.environ.get("CODEC_MODEL") or DEFAULT_MODEL  # as codec.zoo.load_model picks it
card = json.loads((models_dir() / f"{model_id}.json").read_text())
# The weights as shipped (convolutions in bf16, codec.zoo.bf16_names), read once, and the card's
# whole architecture record: train.py reads only the keys it knows, as codec.zoo.build_network does.
state = load(read_weights(weights_path(model_id)))
if "encoder" in card:  # its later encoder weights, as codec.zoo.load_model puts them in
    state.update(encoder_weights(model_id, models_dir(), card["encoder"]))
torch.save({"model": state, "arch": card["architecture"], "step": card["training"]["steps"],
            "wall_s": card["training"]["wall_hours"] * 3600}, ".burst/init.pt")
print("init:", model_id, card["training"]["steps"], "steps")
EOF
    du -sh .burst
    ;;
run|more)
    # run: set up and train from .burst/init.pt. more: on the still-warm machine, resume the
    # runs of the previous call (optimisers included) for MINUTES more, lr LR -> LR_END.
    minutes=${2:?minutes of training}
    PY=${PY:-python3}  # PY=.venv/bin/python DEVICE=cpu rehearses the run here
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    if [ "$mode" = run ]; then
        if [ "${DEVICE:-cuda}" = cuda ]; then
            $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .burst/whl/*.whl
            nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
        fi
        rm -rf /tmp/data /tmp/run
        $PY - <<'EOF'
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from scripts.fetch_data import prepare
out = Path("/tmp/data/prepared/train"); out.mkdir(parents=True, exist_ok=True)
def derive(f):  # NAME_xB.webp (B = 2, or 1 for an original) -> NAME_x2/x3/x4.png, as
    name, base = f.stem.rsplit("_x", 1)  # scripts.fetch_data makes them (+-1 px from a 2x)
    prepare(f, out, name, base=int(base))
with ThreadPoolExecutor(16) as ex:
    list(ex.map(derive, sorted(Path(".burst/data/prepared/train").glob("*.webp"))))
print(len(list(out.glob("*.png"))), "training images")
EOF
        ln -sfn "$PWD/.burst/data/prepared/val" /tmp/data/prepared/val
    fi
    init=.burst/init.pt
    # A rehearsal here (no init.pt) starts from the default model in models/, whatever it is now.
    [ -f "$init" ] || init=$($PY -c "from codec.zoo import DEFAULT_MODEL; print(DEFAULT_MODEL)")
    # One training process per variant in MS, side by side: a 16 x 256^2 step leaves the
    # H100 mostly idle, and in session 5 two processes each ran at one process's speed.
    mkdir -p /tmp/run
    # A fresh optimiser's first Adam steps move every weight by about the lr: without a warm-up one
    # step at 2e-4 took validation at t = 1 from 41.6 to 30.8 dB (session 9). `more` resumes the
    # optimisers, so it needs none.
    warmup=${WARMUP:-$([ "$mode" = run ] && echo 500 || echo 0)}
    for spec in ${MS:-c320}; do
        m=$spec text=0 slices=1 lmax=${LMBDA_MAX:-0.36} na= ns= spatial= bf16=all enc=
        while :; do
            case $m in
                *f) m=${m%f}; bf16=synthesis ;;
                *e) m=${m%e}; enc=--encoder-only ;;
                *h) m=${m%h}; lmax=${LMBDA_HI:-1.0} ;;
                *t) m=${m%t}; text=${TEXT:-0.3} ;;
                *a) m=${m%a}; na=${NA:-192} ;;
                *w) m=${m%w}; ns=${NS:-192} ;;
                *s) m=${m%s}; spatial=${SPATIAL:-3} ;;
                *) break ;;
            esac
        done
        [ "${m#c}" = "$m" ] || { m=${m#c}; slices=${SLICES:-5}; }
        $PY -m scripts.train --run /tmp/run/m$spec --data /tmp/data --init "$init" --device "${DEVICE:-cuda}" \
            --threads "${THREADS:-6}" --minutes "$minutes" --batch "${BATCH:-16}" --crop "${CROP:-256}" \
            --lr "${LR:-2e-4}" --lr-end "${LR_END:-1e-5}" --levels "${LEVELS:-9}" --lmbda-max "$lmax" \
            --M "$m" --slices "$slices" ${na:+--Na "$na"} ${ns:+--Ns "$ns"} ${spatial:+--spatial-groups "$spatial"} --warmup "$warmup" --seed "$m" --text "$text" --bf16 "$bf16" $enc \
            --detail "${DETAIL:-0.5}" --area-power "${AREA_POWER:-1.0}" --shapes "${SHAPES:-0}" --log-every 100 --ckpt-every 1000 --val-every 2000 \
            >> "/tmp/run/m$spec.out" 2>&1 &
    done
    wait || true
    for m in ${MS:-c320}; do  # m: the width with its suffix
        mkdir -p "$OUT/m$m"
        tail -n 3 "/tmp/run/m$m.out"
        # At most 8 files come back: the log only where there is no checkpoint to bring.
        [ -f "/tmp/run/m$m/last.pt" ] || { cp "/tmp/run/m$m.out" "$OUT/m$m/train.out"; continue; }
        RUN_DIR=/tmp/run/m$m DEST="$OUT/m$m" $PY - <<'EOF'
import io, os, torch
from codec.zoo import bf16_names, build_network
run, out = os.environ["RUN_DIR"], os.environ["DEST"]
ck = torch.load(f"{run}/last.pt", map_location="cpu", weights_only=False)
keep = {k: ck[k] for k in ("model", "arch", "step", "wall_s", "args")}
# Transforms as bf16, as shipped (codec.zoo.bf16_names): two context runs in float32 (2 x 36 MB)
# broke the 64 MiB that comes back in session 9; this way each is 26 MB (29 MB with NA=192).
half = bf16_names(build_network(ck["arch"]))
keep["model"] = {k: v.bfloat16() if k in half else v for k, v in keep["model"].items()}
buf = io.BytesIO(); torch.save(keep, buf); raw = buf.getvalue()
part = 15 << 20
for i in range(0, len(raw), part):
    open(f"{out}/ckpt.part{i // part:02d}", "wb").write(raw[i:i + part])
print(run, "step", ck["step"], "checkpoint bytes", len(raw))
EOF
        cp "/tmp/run/m$m/log.jsonl" "$OUT/m$m/"
    done
    ;;
unpack)
    src=${2:?folder with ckpt.part*} run=${3:?run folder}
    mkdir -p "$run"
    cat "$src"/ckpt.part* > "$run/burst.pt"
    cp "$src/log.jsonl" "$run/burst_log.jsonl"
    echo "wrote $run/burst.pt; continue with: python -m scripts.train --run $run --init $run/burst.pt"
    ;;
*)
    echo "usage: $0 pack | run MINUTES | more MINUTES | unpack DIR RUN" >&2; exit 2 ;;
esac
