"""Components shipped by the core: timm/torchvision models, image datasets, cross-entropy,
top-k accuracy, the local runner and the ONNX exporter."""
