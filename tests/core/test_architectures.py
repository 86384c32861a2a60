"""The three architectures build, fit the bundle's window, and refuse nonsense."""

import numpy as np
import pytest

from audioclf_core.errors import ParameterError

keras = pytest.importorskip("keras")


@pytest.mark.parametrize("arch", ["cnn", "resnet", "mlp"])
def test_builds_for_a_window_and_outputs_probabilities(arch):
    from audioclf_core.architectures import build_model

    model = build_model(arch, (97, 64), 4)
    assert model.input_shape == (None, 97, 64) and model.output_shape == (None, 4)
    x = np.random.default_rng(0).standard_normal((3, 97, 64)).astype(np.float32)
    p = model(x, training=False).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)


def test_unknown_architecture_and_label_count():
    from audioclf_core.architectures import build_model

    with pytest.raises(ParameterError, match="unknown architecture 'vgg'"):
        build_model("vgg", (97, 64), 3)
    with pytest.raises(ParameterError, match="n_labels=1"):
        build_model("cnn", (97, 64), 1)
