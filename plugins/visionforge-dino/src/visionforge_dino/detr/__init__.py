"""DETR (Carion et al., 2020) and the pieces DINO reuses: ResNet backbone with frozen
batch norm, sine position encoding, Hungarian matcher, official checkpoint loading.

Kept torch-free at import: ``configs`` is read by the plugin's entry module.
"""
