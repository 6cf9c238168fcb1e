"""Builders of the registered ``detr_r50`` / ``detr_r101`` models (lazy: imported on build)."""

from __future__ import annotations

from visionforge.components.models import load_weights
from visionforge_dino.detr.backbone import ResNetBackbone, load_backbone_weights
from visionforge_dino.detr.coco_categories import COCO_ID_CLASSES, coco_id_class_names
from visionforge_dino.detr.configs import DetrModelConfig
from visionforge_dino.detr.model import DETR
from visionforge_dino.detr.position_encoding import SinePositionEncoding
from visionforge_dino.detr.transformer import DetrTransformer
from visionforge_dino.detr.weights import load_detr_weights


def build_detr(cfg: DetrModelConfig) -> DETR:
    """DETR from its config; ImageNet backbone weights, then DETR weights when given (the
    load report is kept as ``model.weights_report``)."""
    backbone = ResNetBackbone(
        cfg.backbone,
        source=cfg.backbone_source,
        stages=("layer4",),
        dilation=cfg.dilation,
        trainable=cfg.train_backbone,
        norm=cfg.backbone_norm,
    )
    if cfg.backbone_weights is not None:
        load_backbone_weights(backbone, load_weights(cfg.backbone_weights), cfg.backbone_weights)
    transformer = DetrTransformer(
        d_model=cfg.hidden_dim,
        nhead=cfg.nheads,
        num_encoder_layers=cfg.enc_layers,
        num_decoder_layers=cfg.dec_layers,
        dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout,
        pre_norm=cfg.pre_norm,
    )
    position = SinePositionEncoding(
        cfg.hidden_dim // 2, temperature=cfg.position_temperature, normalize=True
    )
    class_names, category_ids = cfg.class_names, cfg.category_ids
    if category_ids is None and class_names is None and cfg.num_classes == COCO_ID_CLASSES:
        class_names, category_ids = coco_id_class_names(), list(range(COCO_ID_CLASSES))
    model = DETR(
        backbone,
        position,
        transformer,
        num_classes=cfg.num_classes,
        num_queries=cfg.num_queries,
        aux_loss=cfg.aux_loss,
        category_ids=category_ids,
        class_names=class_names,
    )
    model.weights_report = None if cfg.weights is None else load_detr_weights(model, cfg.weights)
    return model
