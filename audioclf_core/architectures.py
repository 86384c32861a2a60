"""Model architectures for window classification.

Every builder takes one window of features, shape ``(frames, features)``,
and returns a Keras model ending in a softmax over ``n_labels``. Imports Keras:
only training and bundle-building code import this module.
"""

from __future__ import annotations

import keras
from keras import layers

from .errors import ParameterError
from .layers import ResidualBlock

ARCHITECTURES = ("cnn", "resnet", "mlp")


def _image_input(input_shape: tuple[int, int]):
    """The window as a one-channel image for 2-D convolutions."""
    inp = keras.Input(shape=input_shape, name="features")
    return inp, layers.Reshape((*input_shape, 1))(inp)


def _softmax_head(x, n_labels: int, *, dropout: float):
    """Global average pooling, dropout, and a softmax over the labels."""
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return layers.Dense(n_labels, activation="softmax", name="probs")(x)


def build_cnn(input_shape: tuple[int, int], n_labels: int, *, width: int = 16, l2: float = 1e-4, dropout: float = 0.2) -> keras.Model:
    """Compact CNN: three conv blocks (conv, batch norm, ReLU, max pooling), L2, global pooling."""
    reg = keras.regularizers.L2(l2) if l2 else None
    inp, x = _image_input(input_shape)
    for i, f in enumerate((width, 2 * width, 4 * width)):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return keras.Model(inp, _softmax_head(x, n_labels, dropout=dropout), name="cnn")


def build_resnet(input_shape: tuple[int, int], n_labels: int, *, width: int = 16, l2: float = 1e-4, dropout: float = 0.2) -> keras.Model:
    """Residual CNN: a stem convolution and three residual stages, the last two downsampling."""
    reg = keras.regularizers.L2(l2) if l2 else None
    inp, x = _image_input(input_shape)
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, kernel_regularizer=reg, name="stem")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = ResidualBlock(width, l2=l2, name="res1")(x)
    x = ResidualBlock(2 * width, stride=2, l2=l2, name="res2")(x)
    x = ResidualBlock(4 * width, stride=2, l2=l2, name="res3")(x)
    return keras.Model(inp, _softmax_head(x, n_labels, dropout=dropout), name="resnet")


def build_mlp(input_shape: tuple[int, int], n_labels: int, *, width: int = 256, l2: float = 1e-4, dropout: float = 0.3) -> keras.Model:
    """MLP on the flattened spectrogram window."""
    reg = keras.regularizers.L2(l2) if l2 else None
    inp = keras.Input(shape=input_shape, name="features")
    x = layers.Flatten()(inp)
    for i, units in enumerate((width, width // 2)):
        x = layers.Dense(units, kernel_regularizer=reg, name=f"dense{i}")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_labels, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="mlp")


def build_model(arch: str, input_shape: tuple[int, int], n_labels: int, **kwargs) -> keras.Model:
    """Build one of :data:`ARCHITECTURES` by name."""
    builders = {"cnn": build_cnn, "resnet": build_resnet, "mlp": build_mlp}
    if arch not in builders:
        raise ParameterError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if n_labels < 2:
        raise ParameterError(f"n_labels={n_labels}: a classifier needs at least two labels")
    return builders[arch](tuple(input_shape), n_labels, **kwargs)
