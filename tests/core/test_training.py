"""Training and evaluation: a tiny real model on real clips, splits by group, honest reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import signal

from audioclf_core.bundle import MANIFEST, MODEL_FILE, file_sha256, load_bundle
from audioclf_core.errors import BundleError, OutputError, ParameterError
from audioclf_core.evaluation import (
    Evaluation, accuracy_intervals, confusion_matrix, evaluate_bundle, group_bootstrap_interval, group_counts,
    roc_auc_ovr, wilson_interval, write_report,
)
from audioclf_core import training
from audioclf_core.features import FeatureExtractor, mel_filterbank
from audioclf_core.params import SilenceParams
from audioclf_core.training import (
    time_stretch,
    PRESETS,
    AugmentParams,
    WindowSampler,
    augment,
    band_limit,
    change_speed,
    class_weights,
    cut_recordings,
    decoded,
    ensemble,
    group_split,
    hold_sound,
    load_clips,
    load_table,
    mask_window,
    mix_noise,
    mu_law,
    mu_law_decode,
    mu_law_encode,
    repool,
    reverberate,
    rms,
    room_response,
    shift_pitch,
    soup,
    steadiest_frame,
    train,
    validation_windows,
    voice_period,
)

DATA = Path(__file__).parents[1] / "data"
SR = 8000
TEST_GROUPS = ["allison-prompts", "moh-reno", "noise-tones"]


def make_noise_clips(folder: Path) -> list[dict]:
    """Four noise clips made with numpy (the fixtures hold only speech and music)."""
    rng = np.random.default_rng(7)
    t = np.arange(int(2.5 * SR)) / SR
    clips = {
        "hiss": (0.05 * rng.standard_normal(t.size), "noise-hiss"),
        "hum": (0.2 * sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 8)), "noise-hiss"),
        "ringback": (0.3 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)) * ((t % 1.0) < 0.6), "noise-tones"),
        "dtmf": (0.3 * (np.sin(2 * np.pi * 697 * t) + np.sin(2 * np.pi * 1209 * t)) * ((t % 0.3) < 0.15), "noise-tones"),
    }
    (folder / "noise").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (y, group) in clips.items():
        path = folder / "noise" / f"{name}.wav"
        sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"path": str(path), "label": "noise", "group": group, "synthetic": 0})
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """tests/data's 6 speech and 2 music clips plus 4 numpy noise clips, with groups, as manifest.csv."""
    root = tmp_path_factory.mktemp("clips")
    labels = pd.read_csv(DATA / "labels.csv")
    rows = []
    for r in labels.itertuples():
        group = ("allison-digits" if "digits" in r.file else "allison-prompts") if r.label == "speech" else (
            "moh-reno" if "reno" in r.file else "moh-macroform")
        rows.append({"path": str(DATA / r.file), "label": r.label, "group": group, "synthetic": 0})
    rows += make_noise_clips(root)
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A tiny CNN trained for one epoch; three groups held out."""
    out = tmp_path_factory.mktemp("bundles") / "smn-tiny"
    return train(dataset, out=out, arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1, batch_size=16,
                 max_windows_per_epoch=48, test_groups=TEST_GROUPS, val_fraction=0.0, seed=3, verbose=0, workers=1)


# -- the trained bundle ----------------------------------------------------------------
@pytest.mark.slow
def test_saved_bundle_predicts_what_the_trained_model_predicted(trained):
    from audioclf_core.model import Predictor
    from audioclf_core.pipeline import Classifier

    bundle = load_bundle(trained.bundle.path)
    y, sr = sf.read(DATA / "speech_en_transfer.wav", dtype="float32")
    assert sr == bundle.sample_rate == 8000
    x = bundle.features.windows(y, window=bundle.window_samples, hop=bundle.hop_samples)
    assert x.shape[1:] == bundle.input_shape == (97, 40)
    np.testing.assert_allclose(Predictor(bundle.model)(x), Predictor(trained.model)(x), rtol=0, atol=1e-6)
    # The evaluation scored each held-out clip as the pipeline scores a segment.
    ev = trained.evaluations["as-is"]
    i = ev.files.index(str(DATA / "speech_en_transfer.wav"))
    assert bundle.pooling == PRESETS["smn"].pooling == "energy"
    power = bundle.features.window_power(y, window=bundle.window_samples, hop=bundle.hop_samples)
    assert len(x) > 1 and power.max() > 2 * power.min()  # windows whose weights differ
    np.testing.assert_allclose(Classifier(bundle).segment_probs([x], [power])[0], ev.probs[i], atol=1e-5)


@pytest.mark.slow
def test_manifest_records_contract_data_and_heldout_figures(trained):
    m = load_bundle(trained.bundle.path).manifest
    assert m.trained and m.name == "speech-music-noise" and m.version == "1.0.0"
    assert m.labels == ("speech", "music", "noise")
    assert (m.sample_rate, m.window_s, m.hop_s) == (8000, 1.0, 0.5)
    assert m.features == PRESETS["smn"].features and m.architecture == "cnn"
    split = m.provenance["data"]["split"]
    assert sorted(split["test"]["groups"]) == sorted(TEST_GROUPS) == sorted(m.evaluation["heldout_groups"])
    assert not set(split["train"]["groups"]) & set(split["test"]["groups"])
    assert split["train"]["clips"] + split["val"]["clips"] + split["test"]["clips"] == 12
    assert set(m.provenance["data"]["hours_per_label"]) == {"speech", "music", "noise"}
    asis = m.evaluation["conditions"]["as-is"]
    assert asis["segments"] == 3 + 1 + 2  # allison prompts, one hold-music excerpt, two tone clips
    assert np.array(asis["confusion"]).sum() == 6
    assert {k: v["support"] for k, v in asis["per_class"].items()} == {"speech": 3, "music": 1, "noise": 2}
    assert "telephone" in m.evaluation["conditions"]
    assert m.evaluation["speed"]["windows_per_s"] > 0
    assert (trained.bundle.path / MODEL_FILE).stat().st_size < 5_000_000
    # training weighed its windows by class_weights: balanced weights' inverses sum to the label count
    weights = np.array(list(m.provenance["training"]["class_weight"].values()))
    assert len(set(weights)) > 1 and (1 / weights).sum() == pytest.approx(3, abs=1e-3)


@pytest.mark.slow
def test_saved_weights_hold_no_optimizer_state(trained):
    """Adam keeps two moments per weight: saved with the model they would triple the file."""
    import zipfile

    import h5py

    def stored(group) -> int:
        n = []
        group.visititems(lambda _, o: n.append(o.size) if isinstance(o, h5py.Dataset) else None)
        return sum(n)

    with zipfile.ZipFile(trained.bundle.path / MODEL_FILE) as z, z.open("model.weights.h5") as raw:
        with h5py.File(raw, "r") as h5:
            assert stored(h5["layers"]) == trained.model.count_params()
            assert "optimizer" not in h5 or stored(h5["optimizer"]) == 0


@pytest.mark.slow
def test_a_bundle_is_never_overwritten(trained, dataset):
    before = file_sha256(trained.bundle.path / MODEL_FILE)
    with pytest.raises(BundleError, match="never overwritten"):
        train(dataset, out=trained.bundle.path, arch="cnn", epochs=1, verbose=0)
    assert file_sha256(trained.bundle.path / MODEL_FILE) == before


@pytest.mark.slow
def test_fine_tuning_writes_a_new_version_and_keeps_the_parent(trained, dataset, tmp_path):
    # The parent pools by the mean (as bundles made before pooling existed): the child keeps its contract.
    parent = tmp_path / "v1"
    shutil.copytree(trained.bundle.path, parent)
    data = json.loads((parent / MANIFEST).read_text())
    data["pooling"] = "mean"
    (parent / MANIFEST).write_text(json.dumps(data))
    files_before = {p.name: p.read_bytes() for p in parent.iterdir()}
    with pytest.raises(BundleError, match="never overwritten"):
        train(dataset, out=parent, from_bundle=parent, epochs=1, verbose=0)
    child = train(dataset, out=tmp_path / "v2", from_bundle=parent, freeze_features=True, epochs=1, batch_size=16,
                  max_windows_per_epoch=32, test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0, workers=1)
    assert {p.name: p.read_bytes() for p in parent.iterdir()} == files_before
    m = load_bundle(child.bundle.path).manifest
    assert m.version == "1.1.0" and m.name == "speech-music-noise"
    assert m.provenance["parent"] == {"name": "speech-music-noise", "version": "1.0.0",
                                      "sha256": trained.bundle.sha256, "freeze_features": True}
    assert m.features == trained.bundle.manifest.features and m.labels == trained.bundle.labels
    assert m.pooling == "mean" != trained.bundle.pooling
    # the network is the parent's, and the manifest says so
    assert (m.architecture, m.provenance["training"]["arch_kwargs"]) == ("cnn", {"width": 4})
    with pytest.raises(ParameterError, match="width cannot change in a fine-tune"):
        train(dataset, out=tmp_path / "v3", from_bundle=parent, arch_kwargs={"width": 8}, epochs=1, verbose=0)
    assert not (tmp_path / "v3").exists()
    # Frozen features: every layer but the output layer kept the parent's weights.
    new, old = load_bundle(child.bundle.path).model, load_bundle(parent).model
    for a, b in zip(new.layers[:-1], old.layers[:-1]):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wb) for wa, wb in zip(new.layers[-1].get_weights(), old.layers[-1].get_weights()))


@pytest.mark.slow
def test_a_fine_tune_starts_gently_and_records_what_its_parent_scored_on_validation(trained, dataset, tmp_path):
    split = dict(test_groups=["moh-reno"], val_groups=["allison-prompts", "noise-tones"], epochs=1, batch_size=16,
                 max_windows_per_epoch=32, verbose=0, workers=1)
    # Output layer only, at a learning rate too small to move it: the fine-tune's validation
    # accuracy must be the parent's, measured on the same windows.
    still = train(dataset, out=tmp_path / "still", from_bundle=trained.bundle.path, freeze_features=True,
                  learning_rate=1e-12, **split).bundle.manifest.provenance["training"]
    assert still["parent_val_window_accuracy"] == still["best_val_window_accuracy"]
    moved = train(dataset, out=tmp_path / "moved", from_bundle=trained.bundle.path, **split).bundle.manifest.provenance["training"]
    assert moved["learning_rate"] == training.FINE_TUNE_LEARNING_RATE < training.LEARNING_RATE
    assert moved["parent_val_window_accuracy"] == still["parent_val_window_accuracy"]
    assert trained.bundle.manifest.provenance["training"]["learning_rate"] == training.LEARNING_RATE
    assert "parent_val_window_accuracy" not in trained.bundle.manifest.provenance["training"]


@pytest.mark.slow
def test_a_fine_tune_trains_as_its_parent_was_trained_unless_a_preset_is_named(trained, dataset, tmp_path):
    from audioclf_core.training import fine_tune_preset

    parent = tmp_path / "v1"
    shutil.copytree(trained.bundle.path, parent)
    data = json.loads((parent / MANIFEST).read_text())
    rec = data["provenance"]["training"]
    assert (rec["crop"], rec["noise_label"]) == ("window", "noise")
    rec["crop"], rec["augmentation"]["p_noise"], rec["augmentation"]["snr_db"] = "whole", 0.123, [7.0, 9.0]
    (parent / MANIFEST).write_text(json.dumps(data))
    kw = dict(epochs=1, batch_size=16, max_windows_per_epoch=32, test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0,
              workers=1)
    own = train(dataset, out=tmp_path / "own", from_bundle=parent, augment=["p_mask=0.25"], **kw).bundle.manifest
    assert own.provenance["training"]["crop"] == "whole" and own.provenance["training"]["noise_label"] == "noise"
    assert own.provenance["training"]["augmentation"] == {**rec["augmentation"], "p_mask": 0.25}
    named = train(dataset, out=tmp_path / "named", from_bundle=parent, preset="digits", **kw).bundle.manifest
    assert named.provenance["training"]["augmentation"] == json.loads(json.dumps(PRESETS["digits"].augment.to_dict()))
    assert named.provenance["training"]["noise_label"] is None and named.features == own.features  # the contract stays
    # a parent that records none of it trains as the built-in preset with its labels
    for key in ("crop", "augmentation", "noise_label"):
        del rec[key]
    (parent / MANIFEST).write_text(json.dumps(data))
    task = fine_tune_preset(load_bundle(parent, verify=False))
    smn = PRESETS["smn"]
    assert (task.crop, task.augment, task.noise_label) == (smn.crop, smn.augment, smn.noise_label)
    assert (task.features, task.labels, task.name) == (own.features, own.labels, own.name)


@pytest.mark.slow
def test_a_new_bundle_can_take_other_features_and_a_fine_tune_cannot(trained, dataset, tmp_path):
    from audioclf_core.pipeline import Classifier

    kw = dict(arch="cnn", arch_kwargs={"width": 4}, epochs=1, batch_size=16, max_windows_per_epoch=32,
              test_groups=TEST_GROUPS, val_fraction=0.0, verbose=0, workers=1)
    band = train(dataset, out=tmp_path / "band", features=["fmin=300", "fmax=3400", "n_mels=24"], **kw).bundle
    b = load_bundle(band.path)
    f = b.manifest.features
    assert (f.fmin, f.fmax, f.n_mels) == (300.0, 3400.0, 24)
    assert b.input_shape == (97, 24) and b.model.input_shape[1:3] == (97, 24)
    # The saved contract is the one inference computes: a 1 kHz tone peaks in the band whose
    # filter over 300-3400 Hz weighs 1 kHz most, not where the full band's 24 filters would put it.
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32)
    peak = int(b.features.windows(tone, window=SR, hop=SR // 2)[0].mean(axis=0).argmax())
    k = round(1000 / (SR / 2) * (f.n_fft // 2))
    assert peak == mel_filterbank(sr=SR, n_fft=f.n_fft, n_mels=24, fmin=300, fmax=3400)[:, k].argmax()
    assert peak != mel_filterbank(sr=SR, n_fft=f.n_fft, n_mels=24)[:, k].argmax()
    out = Classifier(b).classify_one(str(DATA / "speech_en_transfer.wav"))
    assert out.status == "ok" and out.segments and all(seg[4].shape == (3,) for seg in out.segments)
    with pytest.raises(ParameterError, match="features cannot change in a fine-tune"):
        train(dataset, out=tmp_path / "ft", from_bundle=trained.bundle.path, features=["fmin=300"], epochs=1, verbose=0)
    for items, message in ((["fmax=5000"], "above the Nyquist frequency"), (["fmax=200"], "hold no FFT bin"),
                           (["hop=3"], "expected NAME=VALUE with NAME one of kind, n_fft"),
                           (["fmin=3400", "fmax=300"], "must exceed fmin")):
        with pytest.raises(ParameterError, match=message):
            train(dataset, out=tmp_path / "bad", features=items, **kw)
    assert not (tmp_path / "ft").exists() and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_repooling_keeps_the_weights_and_measures_the_figures_again(trained, dataset, tmp_path):
    src = trained.bundle
    before = {p.name: p.read_bytes() for p in src.path.iterdir()}
    new = repool(src.path, dataset, out=tmp_path / "mean", pooling="mean", version="1.0.1", report=tmp_path / "rep")
    assert {p.name: p.read_bytes() for p in src.path.iterdir()} == before  # the source stays as it was
    assert (new.pooling, new.version, new.sha256) == ("mean", "1.0.1", src.sha256)
    for name in (MODEL_FILE, "model.tflite"):
        assert (new.path / name).read_bytes() == (src.path / name).read_bytes()
    assert new.manifest.provenance["repooled_from"] == {"version": "1.0.0", "pooling": "energy", "sha256": src.sha256}
    for cond in ("as-is", "telephone"):
        want = evaluate_bundle(new, dataset, heldout_only=True, condition=cond)
        assert want.n == 6
        assert new.manifest.evaluation["conditions"][cond] == want.metrics()
    assert (tmp_path / "rep" / "report.md").read_text().count("pooled by their mean (mean)") == 1
    with pytest.raises(BundleError, match="never overwritten"):
        repool(src.path, dataset, out=new.path, pooling="energy", version="1.0.2")
    with pytest.raises(ParameterError, match="pooling='max'"):
        repool(src.path, dataset, out=tmp_path / "x", pooling="max", version="1.0.2")


@pytest.mark.slow
def test_an_ensemble_is_one_bundle_that_averages_its_members(trained, dataset, tmp_path):
    from audioclf_core.engines import load_engine
    from audioclf_core.model import Predictor

    twin = train(dataset, out=tmp_path / "twin", arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1,
                 batch_size=16, max_windows_per_epoch=48, test_groups=TEST_GROUPS, val_fraction=0.0, seed=11,
                 verbose=0, workers=1).bundle
    members = [trained.bundle, twin]
    assert twin.sha256 != trained.bundle.sha256
    ens = ensemble([m.path for m in members], dataset, out=tmp_path / "ens", version="2.0.0", report=tmp_path / "rep")
    assert (ens.name, ens.version, ens.labels, ens.pooling) == ("speech-music-noise", "2.0.0", trained.bundle.labels, "energy")
    assert ens.manifest.architecture == "ensemble of 2 cnn"
    assert [(m["version"], m["sha256"], m["seed"]) for m in ens.manifest.provenance["ensemble_of"]] == \
        [("1.0.0", trained.bundle.sha256, 3), ("1.0.0", twin.sha256, 11)]
    # its probabilities are the members' mean, on real windows, through Keras and through LiteRT
    y, _ = sf.read(DATA / "speech_en_vm-nobodyavail.wav", dtype="float32")
    x = ens.features.windows(y, window=ens.window_samples, hop=ens.hop_samples)
    mean = np.mean([Predictor(m.model)(x) for m in members], axis=0)
    assert not np.allclose(Predictor(members[0].model)(x), mean, atol=1e-3)  # the twin does move the answer
    np.testing.assert_allclose(Predictor(ens.model)(x), mean, atol=1e-6)
    np.testing.assert_allclose(load_engine(ens, engine="litert")(x), mean, atol=1e-4)
    # figures measured on the members' held-out groups, as a fresh evaluation gives them
    for cond in ("as-is", "telephone"):
        want = evaluate_bundle(ens, dataset, heldout_only=True, condition=cond)
        assert want.n == 6 and ens.manifest.evaluation["conditions"][cond] == want.metrics()
    assert ens.manifest.evaluation["validation"] is None  # these members were trained without validation groups
    assert (tmp_path / "rep" / "report.md").is_file()
    # refusals, each before anything is written
    with pytest.raises(BundleError, match="never overwritten"):
        ensemble([m.path for m in members], dataset, out=ens.path, version="2.0.1")
    with pytest.raises(ParameterError, match="at least two"):
        ensemble([twin.path], dataset, out=tmp_path / "one", version="2.0.1")
    with pytest.raises(ParameterError, match="listed twice"):
        ensemble([twin.path, twin.path], dataset, out=tmp_path / "twice", version="2.0.1")
    with pytest.raises(ParameterError, match="not ensemble of 2 cnn"):
        ensemble([ens.path, twin.path], dataset, out=tmp_path / "nested", version="2.0.1")
    other_split = train(dataset, out=tmp_path / "other", arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1,
                        batch_size=16, max_windows_per_epoch=48, test_groups=TEST_GROUPS[:2], val_fraction=0.0,
                        seed=12, verbose=0, workers=1).bundle
    with pytest.raises(ParameterError, match="holds out other groups"):
        ensemble([trained.bundle.path, other_split.path], dataset, out=tmp_path / "split", version="2.0.1")
    mean_pooled = repool(twin.path, dataset, out=tmp_path / "twin-mean", pooling="mean", version="1.0.1")
    with pytest.raises(ParameterError, match="in pooling"):
        ensemble([trained.bundle.path, mean_pooled.path], dataset, out=tmp_path / "pool", version="2.0.1")
    with pytest.raises(ParameterError, match="fine-tune one of its members"):
        train(dataset, out=tmp_path / "tuned", from_bundle=ens.path, epochs=1, verbose=0)
    assert not any((tmp_path / n).exists() for n in ("one", "twice", "nested", "split", "pool", "tuned"))


@pytest.mark.slow
def test_a_soup_averages_the_weights_of_fine_tunes_of_one_parent(trained, dataset, tmp_path):
    from audioclf_core.engines import load_engine
    from audioclf_core.model import Predictor

    tunes = [train(dataset, out=tmp_path / f"ft{seed}", from_bundle=trained.bundle.path, epochs=1, batch_size=16,
                   max_windows_per_epoch=48, learning_rate=0.01, test_groups=TEST_GROUPS, val_fraction=0.0, seed=seed,
                   verbose=0, workers=1).bundle for seed in (21, 22)]
    s = soup([t.path for t in tunes], dataset, out=tmp_path / "soup", version="1.2.0", report=tmp_path / "rep")
    assert (s.name, s.version, s.manifest.architecture, s.pooling) == ("speech-music-noise", "1.2.0", "cnn", "energy")
    assert s.manifest.provenance["parent"] == {"name": "speech-music-noise", "version": "1.0.0", "sha256": trained.bundle.sha256}
    assert [(m["sha256"], m["seed"], m["freeze_features"]) for m in s.manifest.provenance["soup_of"]] == \
        [(t.sha256, t.manifest.provenance["training"]["seed"], False) for t in tunes]
    training = s.manifest.provenance["training"]
    assert training["members"] == 2 and training["learning_rate"] == 0.01  # shared by both
    assert "seed" not in training and "history" not in training  # one run's, not the soup's
    assert training["seconds"] == pytest.approx(sum(t.manifest.provenance["training"]["seconds"] for t in tunes), abs=0.1)
    # every weight is the members' mean, and the members did differ: one model's size, not two
    soup_w, tune_w = s.model.get_weights(), [t.model.get_weights() for t in tunes]
    assert len(soup_w) == len(tune_w[0]) and s.model.count_params() == tunes[0].model.count_params()
    assert any(not np.allclose(a, b) for a, b in zip(*tune_w))
    for w, a, b in zip(soup_w, *tune_w):
        np.testing.assert_allclose(w, (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-7)
    # it runs like any bundle: LiteRT gives what Keras gives
    y, _ = sf.read(DATA / "speech_en_vm-nobodyavail.wav", dtype="float32")
    x = s.features.windows(y, window=s.window_samples, hop=s.hop_samples)
    np.testing.assert_allclose(load_engine(s, engine="litert")(x), Predictor(s.model)(x), atol=1e-4)
    for cond in ("as-is", "telephone"):
        want = evaluate_bundle(s, dataset, heldout_only=True, condition=cond)
        assert want.n == 6 and s.manifest.evaluation["conditions"][cond] == want.metrics()
    assert (tmp_path / "rep" / "report.md").is_file()
    # refusals, each before anything is written
    with pytest.raises(ParameterError, match="different parents"):
        soup([tunes[0].path, trained.bundle.path], dataset, out=tmp_path / "no-parent", version="1.2.1")
    with pytest.raises(ParameterError, match="record no parent"):
        soup([trained.bundle.path, tunes[0].path], dataset, out=tmp_path / "no-parent", version="1.2.1")
    wider = tmp_path / "wider"
    shutil.copytree(tunes[1].path, wider)
    data = json.loads((wider / MANIFEST).read_text())
    data["provenance"]["training"]["arch_kwargs"] = {"width": 8}
    (wider / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ParameterError, match="one architecture"):
        soup([tunes[0].path, wider], dataset, out=tmp_path / "mixed", version="1.2.1")
    with pytest.raises(BundleError, match="never overwritten"):
        soup([t.path for t in tunes], dataset, out=s.path, version="1.2.1")
    assert not any((tmp_path / n).exists() for n in ("no-parent", "mixed"))


@pytest.mark.slow
def test_evaluating_a_bundle_on_its_own_clips_counts_every_clip(trained, dataset, tmp_path):
    ev = evaluate_bundle(trained.bundle.path, dataset)
    assert ev.n == 12 and ev.confusion.sum() == 12
    assert ev.confusion.sum(axis=1).tolist() == [6, 2, 4]  # speech, music, noise
    assert ev.probs.shape == (12, 3) and np.allclose(ev.probs.sum(axis=1), 1, atol=1e-5)
    held = evaluate_bundle(trained.bundle.path, dataset, heldout_only=True)
    assert sorted(set(held.groups)) == sorted(TEST_GROUPS) and held.n == 6
    write_report(ev, tmp_path / "rep", title="own clips")
    assert "Unit: one segment (a clip)," in (tmp_path / "rep" / "report.md").read_text()
    mis = pd.read_csv(tmp_path / "rep" / "misclassified.csv")
    assert len(mis) == int((ev.y_pred != ev.y_true).sum())
    assert list(mis.columns) == ["file", "start_s", "end_s", "group", "true", "predicted", "p_speech", "p_music", "p_noise"]


@pytest.mark.slow
def test_a_bundle_with_a_wrong_manifest_is_refused(trained, dataset, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained.bundle.path, bad)
    data = json.loads((bad / MANIFEST).read_text())
    data["labels"] = ["speech", "music", "noise", "silence"]
    (bad / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="3 outputs, but the manifest lists 4 labels"):
        evaluate_bundle(bad, dataset)
    data["sample_rate"] = 8001
    (bad / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=str(bad)):
        evaluate_bundle(bad, dataset)


# -- group splits ----------------------------------------------------------------------
def _table(n_groups=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = ["speech", "music", "noise"][g % 3]
        synthetic = g % 7 == 0
        rows += [{"path": f"/x/{g}/{i}.wav", "label": label, "group": f"g{g}", "synthetic": synthetic}
                 for i in range(int(rng.integers(1, 40)))]
    return load_table(pd.DataFrame(rows))


@pytest.mark.parametrize("seed", range(6))
def test_the_group_split_never_puts_a_group_on_both_sides(seed):
    table = _table(seed=seed)
    split = group_split(table, test_fraction=0.25, val_fraction=0.15, seed=seed)
    sides = table.assign(split=split).groupby("group")["split"].nunique()
    assert (sides == 1).all()
    assert set(split) == {"train", "val", "test"}
    for lab in ("speech", "music", "noise"):
        assert ((table.label == lab) & (split == "train")).any()
    # Synthetic groups always train: held-out figures are on real recordings.
    assert (split[table.synthetic] == "train").all()
    # The same seed gives the same split; other seeds draw other groups.
    assert split.equals(group_split(table, test_fraction=0.25, val_fraction=0.15, seed=seed))
    others = {tuple(group_split(table, test_fraction=0.25, val_fraction=0.15, seed=s)) for s in range(6)}
    assert len(others) > 1


def test_held_out_fractions_are_of_the_real_clips_and_named_val_groups_are_all_of_validation():
    rows = [{"path": f"/x/r{g}.wav", "label": "speech", "group": f"r{g}", "synthetic": False} for g in range(10)]
    rows += [{"path": f"/x/m{g}.wav", "label": "music", "group": f"m{g}", "synthetic": False} for g in range(10)]
    rows += [{"path": f"/x/tts{i}.wav", "label": "speech", "group": "tts", "synthetic": True} for i in range(90)]
    table = load_table(pd.DataFrame(rows))
    split = group_split(table, test_fraction=0.2, val_fraction=0.0, seed=0)
    assert (split == "test").sum() == 4  # 20 % of the 20 real clips, not of all 110
    split = group_split(_table(), val_groups=["g1"], test_fraction=0.0)
    assert set(_table().group[split == "val"]) == {"g1"}


def test_synthetic_marks_in_a_csv_manifest_are_read(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,group,synthetic\na.wav,speech,g1,1\nb.wav,speech,g2,0\nc.wav,music,g3,true\nd.wav,music,g4,\n")
    assert load_table(csv).synthetic.tolist() == [True, False, True, False]
    # only 1/0 and a blank cell: pandas reads 1.0, 0.0, NaN
    csv.write_text("path,label,group,synthetic\na.wav,speech,g1,1\nb.wav,speech,g2,0\nd.wav,music,g4,\n")
    assert load_table(csv).synthetic.tolist() == [True, False, False]
    table = load_table(pd.DataFrame({"path": ["/a.wav", "/b.wav"], "label": ["x", "y"], "synthetic": [True, False]}))
    assert table.synthetic.tolist() == [True, False]


def test_named_groups_are_held_out_and_unknown_names_are_refused():
    table = _table()
    split = group_split(table, test_groups=["g1", "g2"], val_fraction=0.0)
    assert set(table.group[split == "test"]) == {"g1", "g2"}
    assert set(split) == {"train", "test"}
    with pytest.raises(ParameterError, match="not in the data: nope"):
        group_split(table, test_groups=["nope"])
    with pytest.raises(ParameterError, match="both test and validation"):
        group_split(table, test_groups=["g1"], val_groups=["g1"])


def test_the_last_group_of_a_label_stays_in_training():
    table = load_table(pd.DataFrame({"path": list("abcd"), "label": ["a", "a", "b", "b"], "group": ["g1", "g1", "g2", "g3"]}))
    for seed in range(5):
        split = group_split(table, test_fraction=0.5, val_fraction=0.0, seed=seed)
        assert (split[table.group == "g1"] == "train").all()


def test_tables_from_folders_and_csv(tmp_path):
    for lab in ("speech", "music"):
        (tmp_path / lab).mkdir()
        shutil.copy(DATA / ("speech_en_transfer.wav" if lab == "speech" else "music_reno_project-system.wav"), tmp_path / lab)
    (tmp_path / "speech" / "notes.txt").write_text("not audio")
    t = load_table(tmp_path)
    assert sorted(t.label) == ["music", "speech"] and t.group.nunique() == 2 and not t.synthetic.any()
    pd.DataFrame({"path": ["speech/speech_en_transfer.wav"], "label": ["speech"]}).to_csv(tmp_path / "x.csv", index=False)
    t = load_table(tmp_path / "x.csv")
    assert Path(t.path[0]).is_file()
    pd.DataFrame({"file": ["a.wav"]}).to_csv(tmp_path / "y.csv", index=False)
    with pytest.raises(ParameterError, match="path and label"):
        load_table(tmp_path / "y.csv")
    with pytest.raises(ParameterError, match="no labelled data"):
        load_table(tmp_path / "nowhere")


def test_sub_folders_of_a_label_folder_name_groups(tmp_path):
    clip = DATA / "speech_en_transfer.wav"
    for rel in ("speech/alice/a.wav", "speech/alice/day2/b.wav", "speech/c.wav", "music/alice/d.wav",
                "music/bob/e.wav", "music/f.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, tmp_path / rel)
    t = load_table(tmp_path)
    group = {Path(p).name: g for p, g in zip(t.path, t.group)}
    assert group["a.wav"] == group["b.wav"] == group["d.wav"] == "alice" and group["e.wav"] == "bob"
    assert group["c.wav"] == str(tmp_path / "speech" / "c.wav") and group["f.wav"] == str(tmp_path / "music" / "f.wav")
    for seed in range(6):  # a voice heard in two labels is never split
        split = group_split(t, test_fraction=0.4, val_fraction=0.2, seed=seed)
        assert split[t.group == "alice"].nunique() == 1


def _tone_bursts(spans_s, total_s, sr=8000):
    y = np.zeros(int(total_s * sr), np.float32)
    for a, b in spans_s:
        t = np.arange(int(a * sr), int(b * sr))
        y[t] = 0.3 * np.sin(2 * np.pi * 440 * t / sr)
    return y


def test_long_clips_are_cut_at_their_silences_and_short_ones_stay_whole():
    sr, silence = 8000, SilenceParams()  # 500 ms silences, 100 ms kept each side, 30 s at most
    bursts = [(1.0, 3.0), (5.0, 9.5), (12.0, 12.6), (20.0, 28.0)]
    long_ = _tone_bursts(bursts, 34.0)
    short = _tone_bursts([(0.2, 1.0), (2.5, 3.0)], 3.5)  # a pause inside, but one labelled sound
    silent = np.zeros(40 * sr, np.float32)
    drone = _tone_bursts([(0.0, 45.0)], 45.0)  # one sound longer than a segment can be
    table = pd.DataFrame({"path": ["long", "short", "silent", "drone"], "label": ["music", "speech", "noise", "noise"],
                          "group": ["g1", "g2", "g3", "g4"]})
    logged = []
    clips, t, source = cut_recordings([long_, short, silent, drone], table, sr=sr, silence=silence, log=logged.append)
    assert t.path.tolist() == ["long"] * 4 + ["short"] + ["drone"] * 2 and source.tolist() == [0, 0, 0, 0, 1, 3, 3]
    assert (t.label == t.path.map({"long": "music", "short": "speech", "drone": "noise"})).all()
    pad = silence.keep_silence_ms / 1000
    np.testing.assert_allclose(t[["start_s", "end_s"]].to_numpy()[:4], [(a - pad, b + pad) for a, b in bursts], atol=0.011)
    assert (t.start_s[4], t.end_s[4]) == (0.0, 3.5) and clips[4] is short
    assert t.end_s[5] == t.start_s[6] == pytest.approx(30.0, abs=0.011) and t.end_s[6] == pytest.approx(45.0)
    for c, (a, b) in zip(clips, t[["start_s", "end_s"]].to_numpy()):
        assert len(c) == round((b - a) * sr)
    np.testing.assert_array_equal(clips[1], long_[int(4.9 * sr): int(9.6 * sr)])
    assert "3 clips longer than 30 s" in logged[0] and "into 6 segments" in logged[0] and "1 held no sound" in logged[0]
    with pytest.raises(ParameterError, match="every clip is silent"):
        cut_recordings([silent], table.iloc[:1], sr=sr, silence=silence)


def _long_call(path: Path) -> list[tuple[float, float]]:
    """Three prompts said three times with 1 s of silence after each (31 s, longer than a
    segment can be) written to ``path``; returns where each prompt lies, seconds."""
    sr, gap = 8000, np.zeros(8000, np.float32)
    speech = [sf.read(DATA / f"speech_en_{n}.wav", dtype="float32")[0] for n in ("queue-thereare", "transfer", "vm-nobodyavail")]
    parts, placed, t = [], [], 0.0
    for _ in range(3):
        for y in speech:
            parts += [y, gap]
            placed.append((t, t + len(y) / sr))
            t += (len(y) + len(gap)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(parts), sr)
    return placed


@pytest.mark.slow
def test_evaluating_labelled_recordings_scores_their_segments(tmp_path):
    """A labelled recording longer than a segment is scored as classify would cut it."""
    placed = _long_call(tmp_path / "speech" / "call-1" / "long.wav")
    (tmp_path / "music").mkdir()
    shutil.copy(DATA / "music_reno_project-system.wav", tmp_path / "music")
    ev = evaluate_bundle("speech-music-noise", tmp_path)
    assert ev.n == 10 and ev.groups.count("call-1") == 9
    rows = ev.table()
    mine = rows[rows.group == "call-1"].sort_values("start_s")
    # One segment per placed prompt: inside it (plus the 100 ms kept at each edge) and most of it
    # (the prompts' own quiet lead-in and tail fall under the silence threshold).
    for (s0, s1), (a, b) in zip(mine[["start_s", "end_s"]].to_numpy(), placed):
        assert a - 0.11 <= s0 < s1 <= b + 0.11 and s1 - s0 >= 0.8 * (b - a)
    assert rows[rows.group != "call-1"][["start_s", "end_s"]].to_numpy().tolist() == [[0.0, 4.0]]
    assert (mine.true == "speech").all()
    write_report(ev, tmp_path / "rep", title="recordings")
    assert "each sound of a clip longer than a segment can be" in (tmp_path / "rep" / "report.md").read_text()
    assert len(pd.read_csv(tmp_path / "rep" / "predictions.csv")) == 10


def test_label_folders_in_a_bucket_are_read_as_local_ones(tmp_path, s3_server, s3_bucket):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    layout = {"speech/alice/a.wav": "speech_en_transfer.wav", "speech/alice/day2/b.wav": "speech_en_digits_1.wav",
              "speech/c.wav": "speech_en_digits_5.wav", "music/alice/d.wav": "music_reno_project-system.wav",
              "music/notes.txt": None}
    for rel, src in layout.items():
        (tmp_path / "local" / rel).parent.mkdir(parents=True, exist_ok=True)
        if src is None:
            (tmp_path / "local" / rel).write_text("not audio")
        else:
            shutil.copy(DATA / src, tmp_path / "local" / rel)
        fs.put(str(tmp_path / "local" / rel), f"{s3_bucket}/data/{rel}")
    here = load_table(tmp_path / "local")
    there = load_table(f"s3://{s3_bucket}/data", storage_options=s3_server.storage_options)
    assert there.path.tolist() == [f"s3://{s3_bucket}/data/{Path(p).relative_to(tmp_path / 'local')}" for p in here.path]
    assert there.label.tolist() == here.label.tolist()
    named = there.group[~there.path.str.endswith("/c.wav")].tolist()
    assert named == ["alice"] * 3 and there.group[there.path.str.endswith("/c.wav")].tolist() == [f"s3://{s3_bucket}/data/speech/c.wav"]
    clips, errors = load_clips(there.path.tolist(), sr=SR, storage_options=s3_server.storage_options)
    assert not errors and all(np.array_equal(c, d) for c, d in zip(clips, load_clips(here.path.tolist(), sr=SR)[0]))
    with pytest.raises(ParameterError, match="no labelled data at s3://"):
        load_table(f"s3://{s3_bucket}/nothing", storage_options=s3_server.storage_options)


def test_a_relative_data_folder_names_its_clips_once(tmp_path, monkeypatch):
    (tmp_path / "data" / "speech").mkdir(parents=True)
    shutil.copy(DATA / "speech_en_transfer.wav", tmp_path / "data" / "speech")
    monkeypatch.chdir(tmp_path)
    t = load_table("data")
    assert t.path.tolist() == [str(tmp_path / "data" / "speech" / "speech_en_transfer.wav")]
    assert Path(t.path[0]).is_file()


def test_clips_that_do_not_decode_are_named_and_none_at_all_is_an_error(tmp_path):
    good, bad = DATA / "speech_en_transfer.wav", tmp_path / "bad.wav"
    bad.write_text("not audio")
    said = []
    clips, errors = load_clips([str(good), str(bad)], sr=SR)
    assert decoded(clips, errors, data="two clips", log=said.append).tolist() == [True, False]
    assert len(said) == 1 and said[0].startswith("1 clips did not decode") and "bad.wav" in said[0]
    clips, errors = load_clips([str(bad)], sr=SR)
    with pytest.raises(ParameterError, match="none of the 1 clips of one clip could be decoded.*bad.wav"):
        decoded(clips, errors, data="one clip")


def ffmpeg_pipe(data: bytes, *args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args], input=data, capture_output=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mu_law_is_the_g711_codec_that_ffmpeg_implements():
    # the decoder: every one of the 256 codes decodes as ffmpeg decodes it
    codes = np.arange(256, dtype=np.uint8)
    theirs = np.frombuffer(ffmpeg_pipe(codes.tobytes(), "-f", "mulaw", "-ar", "8000", "-ac", "1", "-i", "-",
                                       "-f", "s16le", "-"), dtype="<i2")
    ours = mu_law_decode(codes)
    assert np.array_equal(np.round(ours * 32768).astype(np.int16), theirs)
    assert np.unique(ours).size == 255 and ours.max() == pytest.approx(32124 / 32768)  # +0 and -0 are one level
    # the encoder, on every 16-bit sample value: ffmpeg picks the nearest level, G.711 its decision
    # table; the two differ only just under a segment's start, where the step doubles
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    theirs = np.frombuffer(ffmpeg_pipe(pcm.astype("<i2").tobytes(), "-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "-",
                                       "-f", "mulaw", "-"), dtype=np.uint8)
    ours = mu_law_encode(pcm / 32768.0)
    differ = ours != theirs
    assert 0 < differ.mean() < 0.01
    segment = lambda c: (~c.astype(np.int32) >> 4) & 0x07  # noqa: E731
    assert np.all(segment(ours[differ]) == segment(theirs[differ]) + 1)  # ffmpeg keeps the top of the segment below
    assert np.all(np.abs(mu_law_decode(ours[differ])) > np.abs(mu_law_decode(theirs[differ])))
    # silence stays silence (a mid-rise quantiser would turn it into a small DC offset)
    assert not mu_law(np.zeros(100, np.float32)).any()


# -- augmentation and windows ----------------------------------------------------------
def test_augmentations_do_what_they_say():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    low, mid = np.sin(2 * np.pi * 100 * t).astype(np.float32), np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    assert rms(band_limit(low, sr=SR, low_hz=300, high_hz=3400)[SR // 4:]) < 0.1 * rms(low)
    assert rms(band_limit(mid, sr=SR, low_hz=300, high_hz=3400)[SR // 4:]) > 0.9 * rms(mid)
    err = mu_law(0.5 * mid) - 0.5 * mid
    assert 0 < rms(err) < 0.01  # 8-bit companding: small, but not nothing
    noise = rng.standard_normal(SR).astype(np.float32)
    mixed = mix_noise(mid, noise, snr_db=10.0, rng=rng)
    assert 20 * np.log10(rms(mid) / rms(mixed - mid)) == pytest.approx(10.0, abs=0.01)
    short = mix_noise(mid, noise[:3000], snr_db=10.0, rng=rng)  # a noise clip shorter than the audio is tiled
    assert short.shape == mid.shape and 20 * np.log10(rms(mid) / rms(short - mid)) == pytest.approx(10.0, abs=0.1)
    for name in ("speed", "stretch", "pitch", "hold_s"):
        with pytest.raises(ParameterError, match="positive"):
            AugmentParams(**{name: (0.0, 1.1)})
    for _ in range(20):
        y = augment(mid * 3, sr=SR, params=AugmentParams(p_noise=1, p_telephone=1, p_mulaw=1), rng=rng)
        assert y.dtype == np.float32 and y.shape == mid.shape and np.isfinite(y).all() and np.abs(y).max() <= 1
    # overdrive: driven 3-20 dB over full scale, a sine is flattened at +-1 over part of each cycle
    quiet = dict(p_noise=0, p_telephone=0, p_mulaw=0, gain_db=(-6.0, -6.0))
    for _ in range(10):
        y = augment(mid, sr=SR, params=AugmentParams(p_clip=1, **quiet), rng=rng)
        flat = np.mean(np.abs(y) >= 0.999)
        assert 0.2 < flat < 0.95, flat  # +3 dB clips ~50 % of a sine's samples, +20 dB ~94 %
    y = augment(mid, sr=SR, params=AugmentParams(p_clip=0, **quiet), rng=rng)
    assert np.abs(y).max() == pytest.approx(10 ** (-6 / 20), rel=1e-4)  # no overdrive: the drawn peak, unclipped


@pytest.mark.parametrize("rate", [0.4, 0.7, 1.3])
def test_time_stretch_changes_tempo_not_pitch(rate):
    # Two tones gated on and off: the gaps' times scale by 1/rate, the tones' pitches stay.
    t = np.arange(2 * SR) / SR
    gate = (np.floor(t * 4) % 2 == 0).astype(np.float32)  # on 0.25 s, off 0.25 s
    y = (0.3 * np.sin(2 * np.pi * 500 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t)).astype(np.float32) * gate
    z = time_stretch(y, rate)
    assert z.dtype == np.float32 and len(z) == round(len(y) / rate) and np.isfinite(z).all()
    spec = np.abs(np.fft.rfft(z * np.hanning(len(z))))
    f = np.fft.rfftfreq(len(z), 1 / SR)
    near = (np.abs(f - 500) < 40) | (np.abs(f - 1300) < 40)
    assert np.sum(spec[near] ** 2) > 0.8 * np.sum(spec ** 2)  # the energy stays at the two pitches
    for tone in (500, 1300):
        band = np.abs(f - tone) < 200
        assert f[band][np.argmax(spec[band])] == pytest.approx(tone, abs=3)
    env = np.convolve(np.abs(z), np.ones(80) / 80, mode="same")
    rises = np.flatnonzero(np.diff((env > 0.1).astype(int)) == 1) / SR
    onsets = [r for i, r in enumerate(rises) if i == 0 or r - rises[i - 1] > 0.15]  # ripples on an edge count once
    assert len(onsets) >= 3 and np.allclose(np.diff(onsets), 0.5 / rate, atol=0.03)  # one tone burst every 0.5 s of the original
    assert time_stretch(y, 1.0) is y or np.array_equal(time_stretch(y, 1.0), y)


FORMANTS = ((700, 80), (1200, 100), (2600, 150))  # an /a/-like vocal tract: centre and bandwidth, Hz
# Each formant as a two-pole resonator: pole radius and angle.
RESONATORS = [(np.exp(-np.pi * bw / SR), 2 * np.pi * f / SR) for f, bw in FORMANTS]


def _tract(x: np.ndarray) -> np.ndarray:
    for r, th in RESONATORS:
        x = signal.lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], x)
    return x


def _tract_gain(freqs: np.ndarray) -> np.ndarray:
    z = np.exp(-1j * 2 * np.pi * np.asarray(freqs) / SR)  # z^-1 on the unit circle
    h = np.ones_like(z)
    for r, th in RESONATORS:
        h *= (1 - r) / (1 - 2 * r * np.cos(th) * z + r * r * z * z)
    return np.abs(h)


@pytest.mark.parametrize("f0,factor", [(100, 1.8), (120, 1.4), (210, 0.6)])
def test_shift_pitch_moves_the_harmonics_and_keeps_the_formants(f0, factor):
    # A sustained vowel: equal harmonics of f0 through three formant resonators. After the
    # shift, the harmonics sit at multiples of f0 * factor and their levels still follow the
    # same vocal tract; a speed change (pitch and formants together) does not.
    t = np.arange(2 * SR) / SR
    y = _tract(sum(np.cos(2 * np.pi * k * f0 * t) for k in range(1, int(3900 / f0))))
    y = (0.5 * y / np.abs(y).max()).astype(np.float32)
    z = shift_pitch(y, factor, sr=SR)
    assert z.dtype == np.float32 and z.shape == y.shape and np.isfinite(z).all()
    assert shift_pitch(y, 1.0, sr=SR) is y

    top = 3400 * min(1.0, factor)  # lowered, the audio holds nothing above factor * 4 kHz

    def harmonics(s, pitch):
        mid = s[SR // 4: -SR // 4] * np.hanning(len(s) - SR // 2)
        spec = np.abs(np.fft.rfft(mid, 1 << 16))
        f = np.fft.rfftfreq(1 << 16, 1 / SR)
        ks = np.arange(1, int(top / pitch)) * pitch
        return ks, spec, f, np.array([spec[np.argmin(np.abs(f - k))] for k in ks])

    new_f0 = f0 * factor
    ks, spec, f, amps = harmonics(z, new_f0)
    on = np.zeros_like(f, bool)
    for k in ks:
        on |= np.abs(f - k) < 0.15 * new_f0
    assert np.sum(spec[on & (f < top)] ** 2) > 0.9 * np.sum(spec[f < top] ** 2)  # energy at the new harmonics
    kept = np.corrcoef(np.log(amps), np.log(_tract_gain(ks)))[0, 1]
    moved = change_speed(time_stretch(y, 1 / factor), factor, sr=SR)[: y.size]
    naive = np.corrcoef(np.log(harmonics(moved, new_f0)[3]), np.log(_tract_gain(ks)))[0, 1]
    assert kept > 0.9 and naive < kept - 0.2, (kept, naive)


def _syllable(f0: float, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """A consonant burst, a short gap, then 0.2 s of a vowel on f0: the audio and the vowel's span."""
    t = np.arange(int(0.2 * SR)) / SR
    vowel = _tract(sum(np.cos(2 * np.pi * k * f0 * t) for k in range(1, int(3900 / f0))))
    vowel = 0.5 * vowel / np.abs(vowel).max()
    head = np.concatenate([np.zeros(400), 0.2 * rng.standard_normal(400), np.zeros(80)])
    y = np.concatenate([head, vowel, np.zeros(800)]).astype(np.float32)
    return y, head.size, head.size + vowel.size


def test_voice_period_and_the_steadiest_frame():
    rng = np.random.default_rng(3)
    y, start, end = _syllable(125, rng)
    assert start + 100 <= steadiest_frame(y, sr=SR) <= end - 100  # in the vowel, not the burst
    period, strength = voice_period(y[start + 400: start + 880], sr=SR)
    assert period == 64 and strength > 0.8  # 8000 / 125 Hz
    assert voice_period(rng.standard_normal(480), sr=SR)[1] < 0.3


@pytest.mark.parametrize("f0,hold", [(110, 1.0), (220, 0.4)])
def test_hold_sound_draws_the_vowel_out_with_its_pitch_and_formants(f0, hold):
    # What comes before the vowel stays as it was; the held stretch is periodic at the vowel's
    # pitch (within the 3 % drift), follows the same vocal tract, and keeps the vowel's level.
    rng = np.random.default_rng(5)
    y, start, end = _syllable(f0, rng)
    z = hold_sound(y, hold, sr=SR, rng=rng)
    assert z.dtype == np.float32 and z.size == y.size + int(hold * SR) and np.isfinite(z).all()
    assert np.array_equal(z[:start], y[:start])
    assert np.array_equal(z[-800:], y[-800:])  # the silence after the vowel follows it
    held = z[end: end + int(hold * SR) - 400].astype(np.float64)  # inside the hold, past the original vowel
    for a in range(0, held.size - 480, 480):
        period, strength = voice_period(held[a: a + 480], sr=SR, fmax=1.5 * f0)
        assert strength > 0.7 and SR / period == pytest.approx(f0, rel=0.05)
    spec = np.abs(np.fft.rfft(held * np.hanning(held.size), 1 << 15))
    f = np.fft.rfftfreq(1 << 15, 1 / SR)
    ks = np.arange(1, int(3400 / f0)) * f0
    amps = np.array([spec[np.abs(f - k) < 0.2 * f0].max() for k in ks])
    assert np.corrcoef(np.log(amps), np.log(_tract_gain(ks)))[0, 1] > 0.9
    level = 20 * np.log10(rms(held.astype(np.float32)) / rms(y[start + 200: end - 200]))
    assert abs(level) < 2.0


def test_hold_sound_keeps_noise_noise_and_leaves_nothing_to_hold_alone():
    rng = np.random.default_rng(6)
    hiss = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    z = hold_sound(hiss, 0.5, sr=SR, rng=rng)
    assert z.size == SR + SR // 2
    mid = z[SR // 2: SR].astype(np.float64)
    assert voice_period(mid[:480], sr=SR)[1] < 0.4  # no pitch made up
    assert 20 * np.log10(rms(mid.astype(np.float32)) / rms(hiss)) == pytest.approx(0.0, abs=2.5)
    tiny = np.ones(100, np.float32)
    assert hold_sound(tiny, 1.0, sr=SR, rng=rng) is tiny or np.array_equal(hold_sound(tiny, 1.0, sr=SR, rng=rng), tiny)


@pytest.mark.parametrize("rt60,drr", [(0.3, 10.0), (0.8, 0.0)])
def test_room_response_decays_by_60_db_in_rt60_with_the_drawn_direct_to_reverberant_ratio(rt60, drr):
    rng = np.random.default_rng(4)
    ir = room_response(sr=SR, rt60_s=rt60, drr_db=drr, rng=rng)
    assert ir.dtype == np.float32 and ir[0] == pytest.approx(1.0, abs=0.05)
    tail = ir[1:].astype(np.float64)
    assert 10 * np.log10(1.0 / np.sum(tail ** 2)) == pytest.approx(drr, abs=0.5)
    start = np.flatnonzero(tail)[0]
    assert 0.001 * SR - 1 <= start + 1 <= 0.005 * SR  # first reflections 1-5 ms after the direct path
    energy = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder's backward integral
    decay_db = 10 * np.log10(energy / energy[start])
    t20 = (np.flatnonzero(decay_db < -25)[0] - np.flatnonzero(decay_db < -5)[0]) / SR
    assert 3 * t20 == pytest.approx(rt60, rel=0.15)  # the T20 estimate of RT60
    # An impulse comes out as the response itself; any input keeps its length and its start.
    click = np.zeros(SR, np.float32)
    click[100] = 1.0
    out = reverberate(click, ir)
    assert out.shape == click.shape and np.allclose(out[100: 100 + ir.size], ir[: SR - 100], atol=1e-5)
    assert np.allclose(out[:100], 0, atol=1e-6)
    with pytest.raises(ParameterError, match="rt60_s"):
        room_response(sr=SR, rt60_s=0.0, drr_db=0.0, rng=rng)


def test_augmentation_parameters_are_checked_and_rooms_never_reach_validation():
    with pytest.raises(ParameterError, match="probability"):
        AugmentParams(p_reverb=1.5)
    with pytest.raises(ParameterError, match="LOW <= HIGH"):
        AugmentParams(pitch=(1.8, 0.6))
    with pytest.raises(ParameterError, match="positive"):
        AugmentParams(rt60_s=(0.0, 0.5))
    with pytest.raises(ParameterError, match="positive"):
        AugmentParams(hold_s=(-0.5, 1.0))
    changed = AugmentParams().with_items(["p_reverb=1", "rt60_s=0.2,0.4", "mask_frames=3"])
    assert (changed.p_reverb, changed.rt60_s, changed.mask_frames) == (1.0, (0.2, 0.4), 3)
    # Validation windows hear the channel only: the same windows whatever the room settings.
    fx = FeatureExtractor(PRESETS["digits"].features, sr=SR)
    y = np.sin(2 * np.pi * 300 * np.arange(6000) / SR).astype(np.float32) * np.hanning(6000).astype(np.float32)
    a = validation_windows([y], np.array([1]), fx=fx, window=SR, hop=SR // 2, seed=0, params=AugmentParams())
    b = validation_windows([y], np.array([1]), fx=fx, window=SR, hop=SR // 2, seed=0, params=changed)
    assert np.array_equal(a[0], b[0])
    rng = np.random.default_rng(0)
    z = augment(y, sr=SR, params=AugmentParams(p_reverb=1, p_noise=0, p_telephone=0, p_mulaw=0, p_clip=0,
                                               gain_db=(0, 0)), rng=rng)
    assert z.shape == y.shape and not np.allclose(z / np.abs(z).max(), y / np.abs(y).max(), atol=1e-3)


def test_mask_window_masks_one_band_run_and_one_frame_run():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((97, 40)).astype(np.float32)
    widths = []
    for _ in range(50):
        m = mask_window(x, bands=6, frames=10, rng=rng)
        assert m.shape == x.shape and not np.shares_memory(m, x)
        cols = np.flatnonzero(np.all(m == x.mean(), axis=0))
        rows = np.flatnonzero(np.all(m == x.mean(), axis=1))
        assert len(cols) <= 6 and len(rows) <= 10
        assert len(cols) == 0 or np.all(np.diff(cols) == 1)
        assert len(rows) == 0 or np.all(np.diff(rows) == 1)
        keep = np.ones_like(x, bool)
        keep[:, cols] = False
        keep[rows, :] = False
        assert np.array_equal(m[keep], x[keep])  # nothing else touched
        widths.append(len(cols))
    assert max(widths) >= 4  # masks are really drawn, not always empty


@pytest.mark.parametrize("crop", ["window", "whole"])
def test_training_windows_are_the_inference_windows(crop):
    fx = FeatureExtractor(PRESETS["smn"].features, sr=SR)
    y, _ = sf.read(DATA / "music_reno_project-system.wav", dtype="float32")
    short, _ = sf.read(DATA / "speech_en_digits_5.wav", dtype="float32")
    clean = AugmentParams(p_noise=0, p_telephone=0, p_clip=0, p_mulaw=0, p_speed=0, p_short=0, gain_db=(0, 0), pad_s=0)
    clips = [short, y if crop == "whole" else y[:SR]]
    s = WindowSampler(clips, np.array([0, 1]), fx, SR, SR // 2, crop, clean, [], seed=0)
    x, labels = s.batch(np.arange(len(s)), epoch=0, key=0)
    assert x.shape[1:] == (97, 40) and x.dtype == np.float32 and sorted(labels) == [0, 1]
    assert np.allclose(x.mean(axis=(1, 2)), 0, atol=1e-4) and np.allclose(x.std(axis=(1, 2)), 1, atol=1e-3)
    # With nothing random left, each window is one that fx.windows() gives for its clip (peak-scaled).
    for xi, li in zip(x, labels):
        clip = clips[li]
        ref = fx.windows(clip / np.abs(clip).max(), window=SR, hop=SR // 2)
        assert np.min(np.abs(ref - xi).max(axis=(1, 2))) < 1e-3


def test_an_epoch_draws_each_clip_once_per_window_of_audio_it_holds(monkeypatch):
    fx = FeatureExtractor(PRESETS["smn"].features, sr=SR)
    six, one, tiny = (np.zeros(n, np.float32) for n in (6 * SR, SR, int(0.3 * SR)))
    clean = AugmentParams()
    s = WindowSampler([six, one, tiny], np.array([0, 1, 1]), fx, SR, SR // 2, "window", clean, [], seed=0)
    assert len(s) == 6 + 1 + 1 and s.class_counts(3).tolist() == [6, 2, 0]  # a short clip is drawn once, not never
    s = WindowSampler([six, one], np.array([0, 1]), fx, SR, SR // 2, "window", clean, [], seed=0, repeat=np.array([3, 1]))
    assert len(s) == 3 * 6 + 1
    # what reaches augmentation: a short crop is that many seconds; a whole clip gets up to pad_s each side
    sizes = []
    real_augment = training.augment
    monkeypatch.setattr(training, "augment", lambda y, **kw: sizes.append(y.size) or real_augment(y, **kw))
    crops = WindowSampler([six], np.array([0]), fx, SR, SR // 2, "window",
                          AugmentParams(p_short=1.0, short_s=(0.5, 0.5), p_speed=0), [], seed=0)
    crops.batch(np.arange(len(crops)), epoch=0, key=0)
    assert set(sizes) == {SR // 2}
    sizes.clear()
    whole = WindowSampler([one] * 20, np.zeros(20, int), fx, SR, SR // 2, "whole", AugmentParams(pad_s=0.15, p_speed=0), [],
                          seed=0)
    whole.batch(np.arange(len(whole)), epoch=0, key=0)
    assert all(SR <= n <= SR + 2 * int(0.15 * SR) for n in sizes) and max(sizes) > SR + 100


def test_class_weights_give_each_label_the_same_total_weight():
    w = class_weights([30, 10, 0])
    np.testing.assert_allclose(w, [40 / 90, 40 / 30, 0.0])
    counts = np.array([120, 7, 33, 1])
    totals = class_weights(counts) * counts
    np.testing.assert_allclose(totals, counts.sum() / 4)  # every label weighs the same in an epoch
    np.testing.assert_allclose(class_weights([5, 5, 5]), 1.0)  # balanced data is left as it is
    for bad in ([], [0, 0], [3, -1]):
        with pytest.raises(ParameterError):
            class_weights(bad)


def _train_and_keep_the_sampler(table, tmp_path, monkeypatch, **kw):
    """Train a tiny MLP on ``table`` (TEST_GROUPS held out, real clips drawn 3 times); returns
    the training windows' sampler and the bundle."""
    table.to_csv(tmp_path / "manifest.csv", index=False)
    made = []

    class Recording(training.WindowSampler):
        def __post_init__(self):
            super().__post_init__()
            made.append(self)

    monkeypatch.setattr(training, "WindowSampler", Recording)
    b = train(tmp_path / "manifest.csv", out=tmp_path / "b", arch="mlp", preset="smn", epochs=1, batch_size=16,
              test_groups=TEST_GROUPS, val_fraction=0.0, real_repeat=3, verbose=0, workers=1, **kw).bundle
    return made[-1], b


def test_training_mixes_only_training_noise_and_repeats_only_real_clips(dataset, tmp_path, monkeypatch):
    """Held-out noise must not leak into training windows as a noise bed; real_repeat is for real clips."""
    table = pd.read_csv(dataset / "manifest.csv")
    table.loc[table.group == "allison-digits", "synthetic"] = 1  # as if a TTS voice
    s, _ = _train_and_keep_the_sampler(table, tmp_path, monkeypatch, max_windows_per_epoch=32)
    read = {name: sf.read(dataset / "noise" / f"{name}.wav", dtype="float32")[0] for name in ("hiss", "hum", "ringback", "dtmf")}
    same = lambda a, b: a.shape == b.shape and np.allclose(a, b, atol=1e-4)  # noqa: E731
    assert len(s.noise_pool) == 2
    assert all(any(same(c, read[n]) for n in ("hiss", "hum")) for c in s.noise_pool)  # the training group's, not noise-tones'
    train_rows = table[~table.group.isin(TEST_GROUPS)].reset_index(drop=True)
    assert len(s.repeat) == len(train_rows)
    assert s.repeat.tolist() == np.where(train_rows.synthetic == 1, 1, 3).tolist()  # clips in the manifest's order
    assert (s.repeat == 1).sum() == (train_rows.synthetic == 1).sum() > 0


def test_training_learns_the_sounds_of_a_long_recording_not_its_silences(dataset, tmp_path, monkeypatch):
    table = pd.read_csv(dataset / "manifest.csv")
    _long_call(tmp_path / "long.wav")
    long_row = {"path": str(tmp_path / "long.wav"), "label": "speech", "group": "call-1", "synthetic": 0}
    table = pd.concat([table.iloc[:1], pd.DataFrame([long_row]), table.iloc[1:]], ignore_index=True)
    table.loc[table.group == "allison-digits", "synthetic"] = 1
    s, b = _train_and_keep_the_sampler(table, tmp_path, monkeypatch, max_windows_per_epoch=64)
    train_rows = table[~table.group.isin(TEST_GROUPS)].reset_index(drop=True)
    k = int(np.flatnonzero(train_rows.group == "call-1")[0])
    assert len(s.clips) == len(train_rows) - 1 + 9  # the recording's nine prompts, not its silences
    prompts = s.clips[k: k + 9]
    assert all(len(c) <= 3.1 * SR for c in prompts) and (s.labels[k: k + 9] == 0).all()  # speech, in the manifest's place
    silent = [float(np.sqrt(np.mean(c[:80] ** 2))) for c in prompts]
    assert max(silent) < 0.05  # each piece starts in the kept edge of a pause, not mid-word
    rows = np.where(train_rows.synthetic == 1, 1, 3).tolist()
    assert s.repeat.tolist() == rows[:k] + [3] * 9 + rows[k + 1:]  # repeats follow their rows
    assert (s.repeat == 1).sum() == (train_rows.synthetic == 1).sum() > 0
    assert b.manifest.provenance["data"]["long_clips_cut_at_silences"] == 1


@pytest.mark.parametrize("crop", ["window", "whole"])
def test_held_sounds_reach_training_windows_only_when_drawn(crop):
    # p_hold 0 draws nothing, so a recipe without holds keeps its random stream whatever the
    # hold range; at p_hold 1 the windows change, and stay windows of the contract's shape.
    fx = FeatureExtractor(PRESETS["smn"].features, sr=SR)
    short, _ = sf.read(DATA / "speech_en_digits_5.wav", dtype="float32")
    music, _ = sf.read(DATA / "music_reno_project-system.wav", dtype="float32")
    clips = [short, music[: 3 * SR]]

    def windows(params):
        s = WindowSampler(clips, np.array([0, 1]), fx, SR, SR // 2, crop, params, [], seed=0)
        return s.batch(np.arange(len(s)), epoch=0, key=0)[0]

    base = windows(AugmentParams())
    assert np.array_equal(base, windows(AugmentParams(hold_s=(1.0, 1.2))))
    held = windows(AugmentParams(p_hold=1.0))
    assert held.shape == base.shape and np.isfinite(held).all() and not np.allclose(held, base)


# -- evaluation on known answers -------------------------------------------------------
def test_metrics_on_known_answers(tmp_path):
    labels = ("a", "b", "c")
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0])
    probs = np.full((9, 3), 0.1, dtype=np.float32)
    probs[np.arange(9), pred] = 0.8
    ev = Evaluation(labels, y_true, probs, [f"f{i}.wav" for i in range(9)], ["g1"] * 5 + ["g2"] * 4)
    assert ev.confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 3]]
    assert confusion_matrix(y_true, pred, n_labels=3).sum() == 9
    assert ev.accuracy == pytest.approx(7 / 9)
    pc = ev.per_class().set_index("label")
    assert pc.loc["a", "precision"] == pytest.approx(2 / 3) and pc.loc["a", "recall"] == pytest.approx(2 / 3)
    assert pc.loc["b", "precision"] == pytest.approx(2 / 3) and pc.loc["b", "recall"] == 1.0
    assert pc.loc["c", "precision"] == 1.0 and pc.loc["c", "recall"] == pytest.approx(3 / 4)
    f1 = [2 / 3, 0.8, 6 / 7]
    assert ev.macro_f1 == pytest.approx(np.mean(f1))
    assert pc["support"].tolist() == [3, 2, 4]
    assert roc_auc_ovr(np.array([0, 0, 1, 1]), np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])).tolist() == [1.0, 1.0]
    assert roc_auc_ovr(np.array([0, 1, 0, 1]), np.array([[0.5, 0.5]] * 4)).tolist() == [0.5, 0.5]
    assert ev.per_group().set_index("group")["accuracy"].to_dict() == {"g1": 0.8, "g2": 0.75}
    auc = roc_auc_ovr(y_true, probs)
    assert np.ptp(auc) > 0 and ev.metrics()["macro_roc_auc"] == round(float(np.mean(auc)), 4)
    # a label with no clip and no prediction has no F1: the macro mean is over the labels present
    two = Evaluation(labels, y_true[:5], probs[:5], [f"f{i}.wav" for i in range(5)], ["g1"] * 5)
    assert two.confusion[2].sum() == 0 and two.confusion[:, 2].sum() == 0
    assert two.macro_f1 == pytest.approx(np.mean([0.8, 0.8]))  # a: P 1, R 2/3; b: P 2/3, R 1

    folder = write_report({"as-is": ev, "telephone": ev}, tmp_path / "r", title="known", context={"bundle": "x"})
    for name in ("report.md", "confusion.png", "roc.png", "confusion-telephone.png", "per_class.csv", "confusion.csv",
                 "per_group.csv", "misclassified.csv", "metrics.json"):
        assert (folder / name).is_file(), name
    assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    mis = pd.read_csv(folder / "misclassified.csv")
    assert mis[["file", "true", "predicted"]].values.tolist() == [["f2.wav", "a", "b"], ["f8.wav", "c", "a"]]
    cm = pd.read_csv(folder / "confusion.csv", index_col=0)
    assert cm.values.tolist() == ev.confusion.tolist()
    md = (folder / "report.md").read_text()
    assert "| as-is | 9 | 0.778 |" in md and "![confusion matrix](confusion.png)" in md
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["as-is"]["confusion"] == ev.confusion.tolist() and metrics["as-is"]["segments"] == 9
    assert "never seen in training" in md and "Not all held out" not in md

    # What the report says about groups the model was trained on, or may have been.
    md = (write_report(ev, tmp_path / "seen", title="t", seen=["g2"]) / "report.md").read_text()
    assert "**Not all held out:** 1 of the 2 groups evaluated here" in md and "(g2)" in md
    assert "never seen in training" not in md
    md = (write_report(ev, tmp_path / "unknown", title="t", seen=None) / "report.md").read_text()
    assert "does not record the groups it was trained on" in md and "never seen in training" not in md


def test_the_report_says_segments_were_cut_only_when_a_file_gave_several_spans(tmp_path):
    labels = ("a", "b")
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], dtype=np.float32)

    def unit(files, spans, name):
        ev = Evaluation(labels, np.array([0, 1, 0]), probs, files, ["g"] * 3, spans=spans)
        md = (write_report(ev, tmp_path / name, title="t") / "report.md").read_text()
        return md.split("Unit: one segment (", 1)[1].split(")", 1)[0], ev.was_cut

    listed_twice = unit(["x.wav", "x.wav", "y.wav"], np.array([[0, 2.0], [0, 2.0], [0, 1.0]]), "twice")
    cut = unit(["x.wav", "x.wav", "y.wav"], np.array([[0.1, 1.0], [3.2, 4.0], [0, 1.0]]), "cut")
    assert listed_twice == ("a clip", False)
    assert cut == ("a clip, or each sound of a clip longer than a segment can be, cut at its silences", True)
    assert unit(["x.wav", "x.wav", "y.wav"], None, "no-spans") == ("a clip", False)


def test_trained_groups_reads_the_recorded_split():
    from types import SimpleNamespace

    from audioclf_core.bundle import load_bundle
    from audioclf_core.evaluation import trained_groups

    def manifest(split):
        return SimpleNamespace(provenance={"data": {"split": split}} if split is not None else {})

    split = {"train": {"groups": ["b", "a"]}, "val": {"groups": ["c", "a"]}, "test": {"groups": ["t"]}}
    assert trained_groups(manifest(split)) == ["a", "b", "c"]  # test groups are not "seen"
    assert trained_groups(manifest({"train": {"groups": []}, "val": {"groups": []}})) == []
    assert trained_groups(manifest({"train": {"clips": 3}})) is None
    assert trained_groups(manifest(None)) is None
    assert trained_groups(load_bundle("placeholder").manifest) is None
    shipped = load_bundle("speech-music-noise").manifest
    held = set(shipped.evaluation["heldout_groups"])
    assert len(trained_groups(shipped)) > 50 and not held & set(trained_groups(shipped))


def test_wilson_interval_matches_scipy_and_stays_in_range():
    from scipy.stats import binomtest

    for k, n in [(45, 57), (3135, 3307), (1, 9), (7, 9)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-6)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2       # nothing right: the interval still admits some
    low, high = wilson_interval(20, 20)
    assert 0.8 < low < 0.9 and high == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ParameterError, match="not a proportion"):
        wilson_interval(5, 4)


def test_group_bootstrap_resamples_whole_groups():
    # two groups, one all wrong and one all right: a resample holds both (0.5) or one of them twice (0 or 1)
    assert group_bootstrap_interval([0, 10], [10, 10]) == (0.0, 1.0)
    # groups that agree leave nothing to vary, however many segments each has
    assert group_bootstrap_interval([8, 4, 40], [10, 5, 50]) == pytest.approx((0.8, 0.8))
    # one group (or empty ones only besides it): nothing to resample
    assert group_bootstrap_interval([3], [4]) is None and group_bootstrap_interval([3, 0], [4, 0]) is None
    spread = group_bootstrap_interval([9, 5, 10, 2, 8, 7], [10, 10, 10, 10, 10, 9])
    assert spread == group_bootstrap_interval([9, 5, 10, 2, 8, 7], [10, 10, 10, 10, 10, 9])   # seeded
    pooled = 41 / 59
    assert spread[0] < pooled < spread[1] and 2 / 10 < spread[0] and spread[1] < 1.0
    # the same pooled figure over segments is narrower when groups differ this much
    w = wilson_interval(41, 59)
    assert spread[1] - spread[0] > w[1] - w[0]
    with pytest.raises(ParameterError, match="one value per group"):
        group_bootstrap_interval([1, 2], [3])


def test_group_interval_has_the_coverage_it_says():
    """40 groups of one segment, half right: a resample's accuracy is Binomial(40, 1/2) / 40, whose
    2.5 % and 97.5 % quantiles are 14/40 and 26/40 (and 15/40, 25/40 for a 90 % interval)."""
    from scipy.stats import binom

    lo, hi = binom.ppf([0.025, 0.975], 40, 0.5) / 40
    assert (lo, hi) == (0.35, 0.65)
    assert group_bootstrap_interval([1, 0] * 20, [1] * 40) == pytest.approx((lo, hi))
    assert group_bootstrap_interval([1, 0] * 20, [1] * 40, level=0.9) == pytest.approx(tuple(binom.ppf([0.05, 0.95], 40, 0.5) / 40))


def test_group_counts_round_a_recorded_accuracy_back_to_segments():
    # 1 of 3 is recorded as 0.3333: truncating 0.9999 would lose the segment
    correct, segments = group_counts({"g1": {"segments": 3, "accuracy": 0.3333}, "g2": {"segments": 7, "accuracy": 0.8571}})
    assert correct.tolist() == [1, 6] and segments.tolist() == [3, 7]


def test_evaluation_records_intervals_that_its_record_reproduces(tmp_path):
    labels = ("a", "b")
    groups = ["g1"] * 10 + ["g2"] * 10 + ["g3"] * 5
    right = np.array([True] * 9 + [False] + [True] * 5 + [False] * 5 + [True] * 5)   # 9/10, 5/10, 5/5
    y_true = np.arange(25) % 2
    pred = np.where(right, y_true, 1 - y_true)
    probs = np.where(pred[:, None] == 0, [[0.9, 0.1]], [[0.2, 0.8]]).astype(np.float32)
    ev = Evaluation(labels, y_true, probs, [f"f{i}" for i in range(25)], groups)
    assert ev.accuracy == pytest.approx(19 / 25)
    ci = ev.accuracy_intervals()
    assert ci["segments"] == pytest.approx(wilson_interval(19, 25))
    assert ci["groups"] == group_bootstrap_interval([9, 5, 5], [10, 10, 5])
    m = json.loads(json.dumps(ev.metrics()))
    assert m["accuracy_ci95"]["segments"] == pytest.approx(list(ci["segments"]), abs=1e-4)
    again = accuracy_intervals(m["per_group"])           # what `models show` does with a manifest
    assert again["segments"] == pytest.approx(ci["segments"]) and again["groups"] == ci["groups"]
    md = (write_report(ev, tmp_path / "r", title="t") / "report.md").read_text()
    lo, hi = ci["segments"]
    assert f"| as-is | 25 | 0.760 | {lo:.3f}–{hi:.3f} |" in md


def test_training_and_evaluation_import_no_tensorflow():
    code = ("import sys, audioclf_core.training, audioclf_core.evaluation\n"
            "print(','.join(m for m in ('tensorflow', 'keras', 'matplotlib', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_the_architecture_names_match_the_builders():
    from audioclf_core import architectures, training

    assert training.ARCHITECTURES == architectures.ARCHITECTURES


def test_bad_arguments_are_refused_before_any_work(dataset, tmp_path):
    with pytest.raises(ParameterError, match="unknown architecture 'transformer'"):
        train(dataset, out=tmp_path / "x", arch="transformer")
    with pytest.raises(ParameterError, match="unknown task preset 'asr'"):
        train(dataset, out=tmp_path / "x", preset="asr")
    with pytest.raises(ParameterError, match="needs --from"):
        train(dataset, out=tmp_path / "x", freeze_features=True)
    with pytest.raises(ParameterError, match="epochs=0"):
        train(dataset, out=tmp_path / "x", epochs=0)
    bad = [
        (dict(arch_kwargs={"width": -3}), "width=-3"), (dict(arch_kwargs={"dropout": 2.0}), "dropout=2.0"),
        (dict(max_windows_per_epoch=0), "max_windows_per_epoch=0"), (dict(learning_rate=-1.0), "learning_rate=-1.0"),
        (dict(learning_rate=float("nan")), "learning_rate=nan"), (dict(patience=-1), "patience=-1"),
        (dict(time_budget_s=0.0), "time_budget_s=0.0"), (dict(version="notaversion"), "'notaversion' is not a version"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ParameterError, match=message):
            train(dataset, out=tmp_path / "x", **kwargs)
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputError, match="bundle folder .*afile is a file"):
        train(dataset, out=tmp_path / "afile")
    with pytest.raises(OutputError, match="cannot write the bundle folder .*afile/b"):
        train(dataset, out=tmp_path / "afile" / "b")
    with pytest.raises(OutputError, match="report folder .*afile is a file"):
        train(dataset, out=tmp_path / "x", report=tmp_path / "afile")
    assert not (tmp_path / "x").exists()


def test_data_with_some_of_the_presets_labels_trains_those_under_its_own_name(tmp_path):
    data = tmp_path / "hold-or-talk"
    for label, names in {"speech": ["speech_en_transfer.wav", "speech_en_digits_1.wav", "speech_en_queue-thereare.wav"],
                         "music": ["music_reno_project-system.wav", "music_macroform-the_simplicity.wav"]}.items():
        (data / label).mkdir(parents=True)
        for n in names:
            shutil.copy(DATA / n, data / label)
    result = train(data, out=tmp_path / "b", arch="cnn", preset="smn", arch_kwargs={"width": 4}, epochs=1,
                   batch_size=8, max_windows_per_epoch=16, test_groups=[str(data / "speech" / "speech_en_digits_1.wav"),
                   str(data / "music" / "music_macroform-the_simplicity.wav")], val_fraction=0.0, verbose=0, workers=1)
    b = load_bundle(tmp_path / "b")
    assert b.labels == ("speech", "music") and b.name == "hold-or-talk"
    assert result.model.output_shape[-1] == 2
