"""The model server: KServe's Python ModelServer over any entry of an exports directory.

``python -m components.serve`` is the serving image's entrypoint and what
``twinflow serve`` runs locally; both answer KServe's V1 and V2 (Open Inference
Protocol) REST APIs. Frameworks are imported only by the loader of the chosen
format, so serving ONNX never imports torch or TensorFlow.
"""
