"""DINO (Zhang et al., 2022) on visionforge's multi-scale deformable attention: deformable
encoder/decoder, contrastive denoising, mixed query selection, look-forward-twice boxes.

Kept torch-free at import: ``configs`` is read by the plugin's entry module.
"""
