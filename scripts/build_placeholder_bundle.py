"""Build the untrained placeholder bundle shipped until trained models land.

The weights are a seeded random initialisation: the bundle exists so that the
whole path (decode, segment, features, inference, results) runs end to end
with the real contract. Its manifest says ``trained: false`` and the CLI warns.

    python scripts/build_placeholder_bundle.py [--out audioclf_core/bundles/placeholder]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import keras

from audioclf_core.architectures import build_model
from audioclf_core.bundle import MANIFEST, check_new_bundle, load_bundle, save_bundle
from audioclf_core.errors import AudioClfError
from audioclf_core.features import FeatureExtractor
from audioclf_core.params import FeatureParams, SilenceParams

SAMPLE_RATE = 16_000
WINDOW_S = 1.0
FEATURES = FeatureParams(kind="logmel", n_fft=512, win_length=400, hop_length=160, n_mels=64, fmax=8000.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "audioclf_core/bundles/placeholder")
    ap.add_argument("--force", action="store_true", help="replace an existing placeholder")
    args = ap.parse_args()
    out = args.out.expanduser()
    if args.force and (out / MANIFEST).is_file():
        if load_bundle(out, verify=False).name != "placeholder":
            sys.exit(f"error: {out} holds another bundle; --force replaces only a placeholder")
        shutil.rmtree(out)
    try:
        check_new_bundle(out, version="0.0.0", hint=" (pass --force to replace a placeholder)")
    except AudioClfError as exc:
        sys.exit(f"error: {exc}")
    keras.utils.set_random_seed(0)
    fx = FeatureExtractor(FEATURES, sr=SAMPLE_RATE)
    shape = (fx.n_frames(int(WINDOW_S * SAMPLE_RATE)), fx.n_features)
    model = build_model("cnn", shape, 3, width=8)
    bundle = save_bundle(
        model,
        out,
        name="placeholder",
        version="0.0.0",
        description="UNTRAINED placeholder: random weights; its labels mean nothing. Replace with a trained bundle.",
        trained=False,
        labels=("speech", "music", "noise"),
        sample_rate=SAMPLE_RATE,
        window_s=WINDOW_S,
        hop_s=0.5,
        features=FEATURES,
        silence=SilenceParams(),
        architecture="cnn",
        provenance={"training": "none (seeded random initialisation, seed 0)", "built_by": "scripts/build_placeholder_bundle.py"},
    )
    print(f"wrote {bundle.path} ({bundle.sha256[:12]}, input {bundle.input_shape})")


if __name__ == "__main__":
    main()
