"""The user-data script of an EC2 run, rendered from ``templates/`` with ``string.Template``.

The script (run once by cloud-init) downloads the run's wheels from ``RUN/wheels/``,
installs the visionforge packages from them alone (``--no-index --no-deps``: an unrelated
project holds the name on the public index), then their third-party dependencies, and writes
and starts a systemd unit running ``visionforge aws agent --run RUN`` (``Restart=on-failure``,
enabled so it starts again at every boot: a spot instance started again after an
interruption resumes by itself). A failing set-up writes ``RUN/FAILED`` with the line.
"""

from __future__ import annotations

import email.parser
import shlex
import string
import zipfile
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from visionforge.errors import ConfigError

USER_DATA_TEMPLATE = "ec2_user_data.sh"
UNIT_TEMPLATE = "visionforge-agent.service"
USER_DATA_LIMIT = 16 * 1024
"""EC2 refuses user data over 16 KB (before base64)."""


@dataclass(frozen=True)
class Wheel:
    """A visionforge wheel shipped with a run."""

    path: Path | None
    name: str
    version: str
    requires: tuple[str, ...]

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def template(name: str) -> string.Template:
    text = resources.files("visionforge_aws").joinpath("templates", name).read_text()
    return string.Template(text)


def read_wheel(path: Path) -> Wheel:
    """Name, version and unconditional ``Requires-Dist`` of the wheel at ``path``."""
    try:
        name, version, _, _ = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            text = archive.read(meta).decode()
    except (ValueError, StopIteration, zipfile.BadZipFile, KeyError) as err:
        raise ConfigError(f"{path}: not a readable wheel ({err})") from err
    requires = email.parser.Parser().parsestr(text).get_all("Requires-Dist") or []
    return Wheel(path, str(name), str(version), _unconditional(requires))


def _unconditional(lines: list[str]) -> tuple[str, ...]:
    """The requirements that no optional extra guards."""
    found = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or "extra" not in str(requirement.marker):
            found.append(str(requirement))
    return tuple(found)


def installed_wheels() -> list[Wheel]:
    """What the wheels built from the installed visionforge packages hold (no file yet)."""
    from visionforge_aws.bundle import visionforge_distributions

    return [
        Wheel(
            None,
            str(canonicalize_name(dist.metadata["Name"])),
            dist.version,
            _unconditional(dist.requires or []),
        )
        for dist in visionforge_distributions()
    ]


def check_wheels(wheels: list[Path], where: str) -> list[Wheel]:
    """The visionforge wheels among ``wheels``: the core and this plugin must be there, each at
    the version installed here (the recipe was checked against those)."""
    found = [read_wheel(p) for p in wheels]
    ours = [w for w in found if w.name == "visionforge" or w.name.startswith("visionforge-")]
    names = {w.name for w in ours}
    for needed in ("visionforge", "visionforge-aws"):
        if needed not in names:
            raise ConfigError(f"{where}: no {needed} wheel among {[p.name for p in wheels]}")
    for wheel in ours:
        try:
            installed = metadata.version(wheel.name)
        except metadata.PackageNotFoundError:
            continue
        if installed != wheel.version:
            raise ConfigError(
                f"{where}: the {wheel.name} wheel is version {wheel.version}, but "
                f"{installed} is installed here; ship the installed version"
            )
    return sorted(ours, key=lambda w: w.name)


def third_party_requirements(wheels: list[Wheel]) -> list[str]:
    """The dependencies of ``wheels`` that are not visionforge packages, deduplicated."""
    ours = {canonicalize_name(w.name) for w in wheels}
    found = {
        line
        for wheel in wheels
        for line in wheel.requires
        if canonicalize_name(Requirement(line).name) not in ours
        and not canonicalize_name(Requirement(line).name).startswith("visionforge")
    }
    return sorted(found, key=str.lower)


def render(
    *,
    run_id: str,
    run_url: str,
    region: str,
    python: str,
    upload_every_s: float,
    wheels: list[Wheel],
) -> str:
    """The user-data script of run ``run_id`` living at ``run_url``."""
    core = next(w for w in wheels if w.name == "visionforge")
    unit = template(UNIT_TEMPLATE).substitute(
        run_id=run_id,
        run_url=run_url,
        region=region,
        python=python,
        upload_every=f"{upload_every_s:g}",
    )
    requirements = third_party_requirements(wheels)
    script = template(USER_DATA_TEMPLATE).substitute(
        run_id=run_id,
        version=core.version,
        run_url=shlex.quote(run_url),
        region=shlex.quote(region),
        python=shlex.quote(python),
        packages=" ".join(shlex.quote(w.pin) for w in wheels),
        install_requirements=(
            f"{shlex.quote(python)} -m pip install {' '.join(map(shlex.quote, requirements))}"
            if requirements
            else ": no third-party dependencies"
        ),
        unit=unit.rstrip("\n"),
    )
    if len(script.encode()) > USER_DATA_LIMIT:
        raise ConfigError(
            f"the user-data script is {len(script.encode())} bytes, over EC2's 16 KB limit"
        )
    return script
