"""A bad argument's error says which argument, so that a command line can call it by its option."""

from __future__ import annotations

import pytest

from audioclf_core.errors import ParameterError
from audioclf_core.params import FeatureParams, SilenceParams


def test_an_error_about_one_argument_reads_as_its_name_or_its_option():
    exc = ParameterError(param="max_windows_per_epoch", value=0, reason="must be at least 1")
    assert str(exc) == "max_windows_per_epoch=0: must be at least 1"
    assert exc.naming({"max_windows_per_epoch": "--max-windows"}) == "--max-windows 0: must be at least 1"
    assert exc.naming({"epochs": "--epochs"}) == str(exc)  # no option gives it: the library's name
    named = ParameterError(param="engine", value="onnx", reason="use one of auto, litert, keras")
    assert named.naming({"engine": "--engine"}) == "--engine 'onnx': use one of auto, litert, keras"
    plain = ParameterError("no inputs: give files")
    assert plain.param is None and plain.naming({"inputs": "--inputs"}) == "no inputs: give files"


def test_a_parameter_objects_check_of_one_field_names_that_field():
    with pytest.raises(ParameterError) as caught:
        SilenceParams(min_silence_ms=-5)
    exc = caught.value
    assert (exc.param, exc.value, exc.reason) == ("min_silence_ms", -5, "Input should be greater than 0")
    assert str(exc) == "invalid SilenceParams: min_silence_ms=-5: Input should be greater than 0"
    assert exc.naming({"min_silence_ms": "--min-silence-ms"}) == "--min-silence-ms -5: Input should be greater than 0"


def test_a_check_of_several_fields_names_none_and_says_the_class_once():
    with pytest.raises(ParameterError) as caught:
        SilenceParams(keep_silence_ms=400, min_silence_ms=500)
    assert caught.value.param is None
    assert str(caught.value) == "invalid SilenceParams: keep_silence_ms=400.0 must be at most half of min_silence_ms=500.0"
    with pytest.raises(ParameterError) as caught:  # two fields wrong: both told, neither named alone
        FeatureParams(n_fft=8, n_mels=0)
    exc = caught.value
    assert exc.param is None and [p.param for p in exc.problems] == ["n_fft", "n_mels"]
    assert str(exc) == f"invalid FeatureParams: n_fft=8: {exc.problems[0].reason}; n_mels=0: {exc.problems[1].reason}"
    # each called by its option where a command has one, by its name where it has none
    assert exc.naming({"n_mels": "--mels"}) == f"n_fft=8: {exc.problems[0].reason}; --mels 0: {exc.problems[1].reason}"
