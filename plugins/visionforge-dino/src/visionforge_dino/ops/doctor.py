"""``visionforge dino doctor``: what the ops can use here, what is built, what runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from visionforge_dino.ops import backends, build


@dataclass
class BackendStatus:
    """One backend as the doctor sees it."""

    name: str
    state: str  # "built", "buildable", "unavailable" or "always"
    detail: str
    fix: str | None = None
    check: str | None = None  # result of the numeric self-check of a built kernel


@dataclass
class Report:
    """Everything ``doctor`` prints."""

    facts: list[tuple[str, str]] = field(default_factory=list)
    backends: list[BackendStatus] = field(default_factory=list)
    active: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a built kernel fails to load or disagrees with the reference."""
        return not any(b.check and not b.check.startswith("ok") for b in self.backends)

    def format(self) -> str:
        width = max(len(label) for label, _ in [*self.facts, *self.active]) + 2
        lines = ["visionforge-dino ops doctor", ""]
        lines += [f"{label:<{width}}{value}" for label, value in self.facts]
        lines += ["", "backends:"]
        for status in self.backends:
            lines.append(f"  {status.name:<9}{status.state}: {status.detail}")
            if status.check:
                lines.append(f"  {'':<9}self-check: {status.check}")
            if status.fix:
                lines.append(f"  {'':<9}fix: {status.fix}")
        lines += ["", "active:"]
        lines += [f"  {label:<{width - 2}}{value}" for label, value in self.active]
        return "\n".join(lines)


def _self_check(backend: str) -> str:
    """Load ``backend`` and compare forward and backward with the reference in float64."""
    device = "cuda" if backend == "cuda" else "cpu"
    try:
        if not backends.ensure_compiled(backend):
            return f"failed to load: {backends.failure(backend)}"
        generator = torch.Generator().manual_seed(0)
        shapes = [(5, 7), (3, 2), (1, 1)]
        keys = sum(h * w for h, w in shapes)
        value = torch.randn(2, keys, 2, 4, generator=generator, dtype=torch.float64)
        locations = torch.rand(2, 6, 2, 3, 2, 2, generator=generator, dtype=torch.float64)
        weights = torch.rand(2, 6, 2, 3, 2, generator=generator, dtype=torch.float64)
        inputs = [t.to(device).requires_grad_() for t in (value, locations * 1.2 - 0.1, weights)]
        from visionforge_dino.ops.functional import multi_scale_deformable_attention

        errors = []
        for name in (backend, "pytorch"):
            out = multi_scale_deformable_attention(
                inputs[0], shapes, None, inputs[1], inputs[2], backend=name
            )
            grads = torch.autograd.grad(out.square().sum(), inputs)
            errors.append([out.detach(), *grads])
        worst = max(float((a - b).abs().max()) for a, b in zip(*errors, strict=True))
    except Exception as err:  # the doctor reports every failure instead of stopping
        return f"FAILED ({type(err).__name__}: {err})"
    if worst > 1e-9:
        return f"FAILED: differs from the reference by {worst:.1e}"
    return f"ok (max difference to the reference {worst:.1e})"


def _backend_status(backend: str, tools: build.Toolchain, check: bool) -> BackendStatus:
    spec = build.build_spec(backend, tools)
    mismatch = build.arch_mismatch(spec)
    if mismatch:
        return BackendStatus(backend, "unavailable", "cannot run on the visible GPU", fix=mismatch)
    library = build.built_library(spec)
    missing = build.missing_requirement(backend, tools)
    if library is not None:
        status = BackendStatus(backend, "built", str(library))
        runnable = backend == "cpu" or torch.cuda.is_available()
        if check and runnable:
            status.check = _self_check(backend)
        elif check:
            status.check = "skipped (no GPU visible)"
        return status
    if missing is None:
        return BackendStatus(
            backend,
            "buildable",
            f"not built yet; first use JIT-builds it into {spec.directory}",
            fix="`visionforge dino build-ops` builds it ahead of time",
        )
    return BackendStatus(backend, "unavailable", "cannot be built here", fix=missing)


def _active(device: str, statuses: dict[str, BackendStatus], requested: str) -> str:
    if requested == "pytorch":
        return "pytorch (requested)"
    if requested not in ("auto", device):
        return f"pytorch ({requested} cannot run {device} tensors)"
    status = statuses[device]
    if status.state == "built" and (status.check is None or status.check.startswith("ok")):
        return device
    if status.state == "buildable":
        return f"{device} after its JIT build on first use"
    return "pytorch (fallback)"


def diagnose(*, check: bool = True) -> Report:
    """Collect the report; ``check`` loads built kernels and compares them numerically."""
    tools = build.find_toolchain()
    report = Report()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    arch_list, arch_source = build.cuda_arch_list()
    report.facts = [
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none: CPU-only build'})"),
        ("GPUs", ", ".join(gpus) if gpus else "none visible"),
        ("C++ compiler", f"{tools.cxx} ({tools.cxx_version})" if tools.cxx else "not found"),
        ("ninja", tools.ninja or "not found"),
        (
            "CUDA toolkit",
            f"{tools.cuda_home} (nvcc {tools.nvcc_version})" if tools.cuda_home else "not found",
        ),
        ("CUDA arch list", f"{arch_list} (from {arch_source})"),
        ("cache", f"{build.cache_root()} (${build.CACHE_ENV} moves it)"),
    ]
    statuses = {name: _backend_status(name, tools, check) for name in build.COMPILED_BACKENDS}
    report.backends = [
        *statuses.values(),
        BackendStatus("pytorch", "always", "grid_sample reference (also the ONNX export path)"),
    ]
    requested = backends.requested_backend()
    env = os.environ.get(backends.BACKEND_ENV)
    report.active = [
        ("requested", f"{requested} (${backends.BACKEND_ENV}={env})" if env else requested),
        ("CPU tensors", _active("cpu", statuses, requested)),
        (
            "CUDA tensors",
            _active("cuda", statuses, requested) if gpus else "no GPU visible",
        ),
    ]
    return report
