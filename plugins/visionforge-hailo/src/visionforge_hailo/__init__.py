"""visionforge-hailo: ONNX -> Hailo HEF (preflight, calibration, model script, DFC) and a
predictor that runs the HEF with HailoRT, or the same ONNX with onnxruntime elsewhere.

Importing this package is cheap: the Dataflow Compiler (``hailo_sdk_client``), HailoRT
(``hailo_platform``) and torch are imported only by the functions that need them.
"""

__version__ = "0.1.0"
