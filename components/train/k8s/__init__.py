"""Distributed training on Kubernetes: Kubeflow Trainer v2 TrainJob (PyTorch),
training-operator v1 TFJob (TensorFlow) or PyTorchJob (clusters still on v1).

``spec`` validates the job, ``manifests`` builds the custom resource (pure),
``conditions`` maps its status to an outcome (pure), ``launcher`` talks to the
API server (untested here: no cluster can run on this machine).
"""
