"""Developer sessions: tests, slow, lint, typecheck, docs, build, bench.

Every session installs with constraints.txt, which pins torch/torchvision for development
and CI; the packages themselves state lower bounds only.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PLUGINS = sorted(str(p) for p in (ROOT / "plugins").glob("visionforge-*") if p.is_dir())
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


# optional extras the tests exercise (without them those tests skip)
TEST_EXTRAS = {"visionforge-resnet": "[dali]"}


def install_project(session: nox.Session) -> None:
    """The core with its dev extras and every plugin, editable, under the pins."""
    editable = [
        arg for plugin in PLUGINS for arg in ("-e", plugin + TEST_EXTRAS.get(Path(plugin).name, ""))
    ]
    session.install(*CONSTRAINTS, "-e", ".[dev]", *editable)


@nox.session
def tests(session: nox.Session) -> None:
    """The fast suite (core and plugins), ``-m "not slow"``. Extra args go to pytest."""
    install_project(session)
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """The slow tests (``-m slow``): end-to-end runs, SIGTERM under load, DDP, packaging."""
    install_project(session)
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the core, the plugins and the benchmarks."""
    install_project(session)
    sources = ["visionforge", *(str(Path(p) / "src") for p in PLUGINS), "benchmarks"]
    session.run("mypy", *sources)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the mkdocs site with --strict (broken links and refs fail)."""
    install_project(session)
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def build(session: nox.Session) -> None:
    """Wheels of the core and every plugin into dist/."""
    session.install("build>=1.2")
    dist = ROOT / "dist"
    for project in [str(ROOT), *PLUGINS]:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), project)


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark script; each prints ours beside its baseline."""
    install_project(session)
    scripts = session.posargs or sorted(str(p) for p in (ROOT / "benchmarks").glob("*.py"))
    for script in scripts:
        session.run("python", script)
