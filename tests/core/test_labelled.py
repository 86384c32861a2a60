"""Labelled clips: tables from folders, manifests and buckets, group splits, decoding, cutting."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audioclf_core.errors import ParameterError
from audioclf_core.labelled import cut_recordings, decoded, group_split, load_clips, load_table
from audioclf_core.params import SilenceParams

DATA = Path(__file__).parents[1] / "data"
SR = 8000


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
    assert "2 clips longer than 30 s" in logged[0] and "into 6 segments" in logged[0]
    assert logged[1].startswith("1 clips hold no sound above -50 dBFS") and logged[1].endswith("the first: silent")
    with pytest.raises(ParameterError, match="all 1 clips are silent"):
        cut_recordings([silent], table.iloc[:1], sr=sr, silence=silence)


def test_short_clips_that_classify_would_find_no_segment_in_are_left_out():
    """A labelled clip of digital silence or of a hiss under the threshold teaches nothing and
    scores nothing: classification never makes a segment of it."""
    sr, silence = 8000, SilenceParams()  # -50 dBFS
    rng = np.random.default_rng(0)
    hiss = (10 ** (-60 / 20) * rng.standard_normal(2 * sr)).astype(np.float32)  # about -60 dBFS RMS
    audible = (10 ** (-40 / 20) * rng.standard_normal(2 * sr)).astype(np.float32)  # about -40 dBFS
    clips = [np.zeros(2 * sr, np.float32), hiss, audible, _tone_bursts([(0.5, 1.5)], 2.0)]
    table = pd.DataFrame({"path": ["zeros", "hiss", "audible", "tone"], "label": ["speech"] * 4,
                          "group": ["a", "b", "c", "d"]})
    logged = []
    out, t, source = cut_recordings(clips, table, sr=sr, silence=silence, log=logged.append)
    assert t.path.tolist() == ["audible", "tone"] and source.tolist() == [2, 3]
    assert out[0] is clips[2] and out[1] is clips[3]  # the kept ones stay whole, pauses and all
    assert (t.start_s.tolist(), t.end_s.tolist()) == ([0.0, 0.0], [2.0, 2.0])
    assert logged == ["2 clips hold no sound above -50 dBFS (classify would find no segment in them) and are left "
                      "out; the first: zeros"]


def test_rows_without_a_path_or_label_are_refused_by_row(tmp_path):
    clip = DATA / "speech_en_transfer.wav"
    rows = pd.DataFrame({"path": [str(clip)] * 3, "label": ["speech", "music", None]})
    with pytest.raises(ParameterError, match=r"1 rows of .* have no label; the first: row 3 .*speech_en_transfer"):
        load_table(rows)
    rows.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ParameterError, match=r"m\.csv have no label; the first: row 3"):
        load_table(tmp_path / "m.csv")
    rows.loc[2, "label"] = " noise "  # a stray space in a spreadsheet
    rows.to_csv(tmp_path / "m.csv", index=False)
    with open(tmp_path / "m.csv", "a") as f:
        f.write(",music\n")
    with pytest.raises(ParameterError, match=r"m\.csv have no path; the first: row 4 .*'music'"):
        load_table(tmp_path / "m.csv")
    assert load_table(rows).label.tolist() == ["speech", "music", "noise"]


@pytest.mark.parametrize("bad,fix", [("hold-music", "hold_music"), ("Speech", "speech"), ("Musik im Wartezimmer", "musik_im_wartezimmer")])
def test_labels_that_cannot_name_an_output_are_refused_with_a_name_that_would_do(tmp_path, bad, fix):
    for lab in ("music", bad):
        (tmp_path / lab).mkdir(exist_ok=True)
        shutil.copy(DATA / "speech_en_transfer.wav", tmp_path / lab)
    with pytest.raises(ParameterError, match=f"label '{bad}' cannot name a model output: .* e.g. '{fix}'"):
        load_table(tmp_path)
    (tmp_path / bad).rename(tmp_path / fix)
    assert sorted(load_table(tmp_path).label.unique()) == sorted({"music", fix})


def test_a_label_folder_without_audio_is_refused_not_dropped(tmp_path, s3_server, s3_bucket):
    import s3fs

    for lab in ("speech", "music"):
        (tmp_path / lab).mkdir()
        shutil.copy(DATA / "speech_en_transfer.wav", tmp_path / lab)
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "readme.txt").write_text("clips to come")
    with pytest.raises(ParameterError, match="label folder noise/ in .* holds no audio files"):
        load_table(tmp_path)
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for rel in ("speech/speech_en_transfer.wav", "music/speech_en_transfer.wav", "noise/readme.txt"):
        fs.put(str(tmp_path / rel), f"{s3_bucket}/labelled/{rel}")
    with pytest.raises(ParameterError, match="label folder noise/ in s3://.* holds no audio files"):
        load_table(f"s3://{s3_bucket}/labelled/", storage_options=s3_server.storage_options)
    (tmp_path / "noise" / "readme.txt").unlink()
    (tmp_path / "noise").rmdir()
    assert sorted(load_table(tmp_path).label.unique()) == ["music", "speech"]


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
