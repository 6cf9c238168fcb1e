"""Builders of the registered ``dino_r50_4scale`` / ``dino_r50_5scale`` models and the ``dino``
loss (lazy: imported on build)."""

from __future__ import annotations

from visionforge.components.models import load_weights
from visionforge_dino.detr.backbone import ResNetBackbone, load_backbone_weights
from visionforge_dino.detr.coco_categories import COCO_ID_CLASSES, coco_id_class_names
from visionforge_dino.detr.position_encoding import SinePositionEncoding
from visionforge_dino.dino.configs import DinoModelConfig
from visionforge_dino.dino.model import DINO
from visionforge_dino.dino.transformer import DeformableTransformer
from visionforge_dino.dino.weights import load_dino_weights


def build_dino(cfg: DinoModelConfig) -> DINO:
    """DINO from its config; ImageNet backbone weights, then DINO weights when given (the
    load report is kept as ``model.weights_report``)."""
    backbone = ResNetBackbone(
        cfg.backbone,
        source=cfg.backbone_source,
        stages=tuple(cfg.backbone_stages),
        trainable=cfg.train_backbone,
        norm=cfg.backbone_norm,
    )
    if cfg.backbone_weights is not None:
        load_backbone_weights(backbone, load_weights(cfg.backbone_weights), cfg.backbone_weights)
    transformer = DeformableTransformer(
        dim=cfg.hidden_dim,
        heads=cfg.nheads,
        enc_layers=cfg.enc_layers,
        dec_layers=cfg.dec_layers,
        ffn=cfg.dim_feedforward,
        dropout=cfg.dropout,
        levels=cfg.num_feature_levels,
        enc_points=cfg.enc_n_points,
        dec_points=cfg.dec_n_points,
        num_queries=cfg.num_queries,
        num_classes=cfg.num_classes,
        backend=cfg.msda_backend,
    )
    position = SinePositionEncoding(
        cfg.hidden_dim // 2, temperature=cfg.position_temperature, normalize=True
    )
    class_names = cfg.class_names
    if cfg.category_ids is None and class_names is None and cfg.num_classes == COCO_ID_CLASSES:
        class_names = coco_id_class_names()
    model = DINO(
        backbone,
        position,
        transformer,
        num_classes=cfg.num_classes,
        num_feature_levels=cfg.num_feature_levels,
        group_norm_groups=cfg.group_norm_groups,
        dn_number=cfg.dn_number,
        dn_label_noise_ratio=cfg.dn_label_noise_ratio,
        dn_box_noise_scale=cfg.dn_box_noise_scale,
        dn_labelbook_size=cfg.dn_labelbook_size,
        num_select=cfg.num_select,
        category_ids=cfg.category_ids,
        class_names=class_names,
    )
    model.weights_report = None if cfg.weights is None else load_dino_weights(model, cfg.weights)
    return model
