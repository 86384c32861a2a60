"""Custom Keras layers, registered so bundles load without ``custom_objects``.

Imported by :mod:`audioclf_core.model` only, which is itself imported lazily:
importing this module imports Keras and TensorFlow.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="audioclf")
class ResidualBlock(layers.Layer):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1) shortcut.

    Parameters
    ----------
    filters : int
        Output channels.
    stride : int
        Stride of the first convolution and of the shortcut (downsampling).
    l2 : float
        L2 weight decay on the convolution kernels.
    """

    def __init__(self, filters: int, *, stride: int = 1, l2: float = 1e-4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.stride = int(stride)
        self.l2 = float(l2)
        reg = keras.regularizers.L2(self.l2) if self.l2 else None
        self.conv1 = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg)
        self.bn1 = layers.BatchNormalization()
        self.conv2 = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg)
        self.bn2 = layers.BatchNormalization()
        self.proj: layers.Layer | None = None
        self.proj_bn: layers.Layer | None = None
        self._project = None

    def build(self, input_shape) -> None:
        self._project = self.stride != 1 or input_shape[-1] != self.filters
        if self._project:
            reg = keras.regularizers.L2(self.l2) if self.l2 else None
            self.proj = layers.Conv2D(self.filters, 1, strides=self.stride, use_bias=False, kernel_regularizer=reg)
            self.proj_bn = layers.BatchNormalization()
            self.proj.build(input_shape)
            self.proj_bn.build(self.proj.compute_output_shape(input_shape))
        self.conv1.build(input_shape)
        mid = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(mid)
        self.conv2.build(mid)
        self.bn2.build(mid)
        super().build(input_shape)

    def call(self, x, training=None):
        h = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        h = self.bn2(self.conv2(h), training=training)
        shortcut = self.proj_bn(self.proj(x), training=training) if self._project else x
        return keras.ops.relu(h + shortcut)

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)[:-1] + (self.filters,)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "stride": self.stride, "l2": self.l2}
