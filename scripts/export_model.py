"""Export a training checkpoint to models/<id>.safetensors + models/<id>.json (the model card).

    python -m scripts.export_model --ckpt runs/mc320/last.pt [--id MODEL_ID] [--bf16-entropy] [--eval]

--encoder-for MODEL_ID instead stores the checkpoint's g_a, h_a and z_gain as optional encoder
weights of that installed model (codec.zoo.export_encoder: refused unless every decoder weight is
the model's); --history says how they were trained.

--eval measures the exported model on shared/data/eval/images with real encodes
(scripts.eval_codec) and stores the RD points in the card.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from codec import zoo
from scripts.train import checkpoint_arch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(ROOT / "runs/mc320/last.pt"))
    ap.add_argument("--id", default=zoo.DEFAULT_MODEL)
    ap.add_argument("--out", default=None, help="models folder (default: models/)")
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--machine", default="2-core CPU, bf16 autocast on the transforms")
    ap.add_argument("--bf16-entropy", action="store_true",
                    help="also store h_s and the context as bf16 (codec.zoo.bf16_names): 26.8 -> 19.0 MB for hpgc")
    ap.add_argument("--encoder-for", metavar="MODEL_ID",
                    help="store only the encoder weights, as an update of this installed model")
    ap.add_argument("--history", default="", help="how the steps were trained, for the card")
    ap.add_argument("--data", help="what the run trained on, for the card",
                    default="shared/data/train_allowlist.tsv photos (Debian wallpapers + scikit-image) and, "
                            "since session 13, scripts/extra_train_photos.tsv (palapeli-data, scipy), "
                            "downscaled 2x/3x/4x; validation split held out (scripts/fetch_data.py)")
    args = ap.parse_args(argv)

    ck = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    targs = ck["args"]
    net = zoo.build_network(checkpoint_arch(ck))
    arch = zoo.architecture(net)
    net.load_state_dict(ck["model"])
    if args.encoder_for:
        net.update(force=True)
        state = zoo.stored_state(net.state_dict(), zoo.bf16_names(net, entropy=args.bf16_entropy))
        entry = {"steps": ck["step"], "wall_hours": round(ck.get("wall_s", 0) / 3600, 2),
                 "machine": args.machine, "history": args.history, "exported": time.strftime("%Y-%m-%d")}
        out = zoo.export_encoder(state, args.encoder_for, entry, Path(args.out) if args.out else None)
        print(f"wrote {out}")
        return 0
    card = {
        "architecture": arch,
        "training": {
            "steps": ck["step"], "wall_hours": round(ck.get("wall_s", 0) / 3600, 2),
            "batch": targs["batch"], "crop": targs["crop"], "lr_last": targs["lr"],
            "loss": "bpp + lambda(t) * 255^2 * MSE, t ~ U(0,1), lambda log-spaced over the range",
            "data": args.data + (f"; photos picked by area ** {targs['area_power']}"
                                 if targs.get("area_power", 1.0) != 1.0 else "")
                    + (f"; {targs['shapes']:.0%} of crops synthetic shaded shapes (scripts/synthetic_shapes.py)"
                       if targs.get("shapes", 0.0) > 0 else ""),
            "machine": args.machine,
            "history": args.history,
            "exported": time.strftime("%Y-%m-%d"),
        },
        "quality_mapping": "t = quality / 100 interpolates the log-gains; lambda(t) log-spaced",
    }
    if args.bf16_entropy:
        card["stored"] = "convolutions as bf16 (transforms and entropy parameters), the rest float32"
    out = zoo.export(net, args.id, card, Path(args.out) if args.out else None,
                     bf16_entropy=args.bf16_entropy)
    print(f"wrote {out}")
    if args.eval:
        from scripts.eval_codec import evaluate

        card_path = out.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["eval"] = evaluate(model=args.id)
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(json.dumps(card["eval"]["points"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
