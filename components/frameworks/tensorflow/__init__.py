"""TensorFlow: every module of twinflow that imports TensorFlow, behind one adapter.

``training`` (tf-keras networks, ``fit``, MultiWorkerMirroredStrategy),
``export`` (SavedModel, TFLite, ONNX through tf2onnx), ``variants`` (TFLite
dynamic range / int8 / float16, tfmot pruning), ``raw_layer`` (the fitted
transform as Keras preprocessing layers), ``tflite_raw`` (the transform in
TFLite builtin ops). Importing this package does not import TensorFlow.
"""

from components.frameworks.tensorflow.adapter import TensorFlowAdapter

ADAPTER = TensorFlowAdapter()

__all__ = ["ADAPTER", "TensorFlowAdapter"]
