"""Distributed training on Kubernetes: Kubeflow Trainer v2 TrainJob (PyTorch),
training-operator v1 TFJob (TensorFlow) or PyTorchJob (clusters still on v1)."""
