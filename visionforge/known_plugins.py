"""Which first-party plugin provides which component (torch-free, no imports of plugins).

Used only to turn "unknown model 'dino_r50_4scale'" into a line saying which package to
install. The registries stay the truth about what is installed.
"""

from __future__ import annotations

from importlib import metadata

VERSION = "0.1.0"
"""The version the plugins are installed at; pinned in install hints because the public
index holds an unrelated project named ``visionforge``."""

KNOWN_COMPONENTS: dict[str, tuple[str, ...]] = {
    "coco": (
        "coco",
        "yolo",
        "synthetic_shapes",
        "coco_bbox",
        "coco_segm",
        "yolo2coco",
        "coco2yolo",
    ),
    "dino": ("detr_r50", "detr_r101", "detr", "dino_r50_4scale", "dino_r50_5scale", "dino"),
    "resnet": ("resnet", "imagenet_folder"),
    "distill": (
        "distillation",
        "distill_student",
        "hf_teacher",
        "timm_teacher",
        "class_folders",
        "retrieval",
    ),
    "aws": ("sagemaker", "ec2"),
    "hailo": ("hailo",),
}
"""plugin (extra) name -> the component names it registers (any kind). A test checks the
entries of every installed first-party plugin against what it really registers."""


def providers(name: str) -> list[str]:
    """First-party plugins that register a component called ``name``."""
    return [plugin for plugin, names in KNOWN_COMPONENTS.items() if name in names]


def install_hint(plugin: str) -> str:
    """How to install a first-party plugin, pinned so pip never picks the unrelated project."""
    return (
        f'pip install --find-links dist "visionforge[{plugin}]=={VERSION}" '
        f"(from a checkout: pip install -e plugins/visionforge-{plugin})"
    )


def missing_component_hint(kind: str, name: str) -> str | None:
    """``"model 'x' is in visionforge-dino: pip install ..."``, or None for unknown names."""
    found = providers(name)
    if not found:
        return None
    plugin = found[0]
    package = f"visionforge-{plugin}"
    try:
        metadata.version(package)
    except metadata.PackageNotFoundError:
        return f"{kind} {name!r} is in {package}, which is not installed: {install_hint(plugin)}"
    return (
        f"{kind} {name!r} is in {package}, which is installed but did not register it "
        "(run `visionforge plugins` to see its load error)"
    )
