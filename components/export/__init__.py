"""Exported model files (TorchScript, ONNX, SavedModel, TFLite) and their manifest."""
