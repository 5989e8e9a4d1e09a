"""What users install: setup.cfg declares the oldest versions tox proves, and no upper caps."""

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, str]:
    """Every requirement of setup.cfg (install_requires and every extra): name -> its specifier."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"].values():
        lines += extra.splitlines()
    requirements = {}
    for line in filter(None, (line.strip() for line in lines)):
        name, specifier = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()
        requirements[name.lower()] = specifier
    return requirements


def oldest_pins() -> dict[str, str]:
    """name -> version pinned in tox's oldest environment (jax0.4.38, with the default torch)."""
    pins = {}
    for line in (ROOT / "tox.ini").read_text().splitlines():
        match = re.match(r"\s*(jax0\.4\.38|!torch2\.14):\s*([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[match.group(2).lower()] = match.group(3)
    return pins


def release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.match(r"[0-9.]+", version).group().rstrip(".").split("."))


def test_every_requirement_has_a_lower_bound_and_no_cap():
    for name, specifier in declared().items():
        assert re.fullmatch(r">=[0-9.]+", specifier), \
            f"{name}: expected only a lower bound such as >=1.2; got {specifier!r}"


def test_each_lower_bound_is_what_the_oldest_tox_environment_pins():
    pins = oldest_pins()
    for name, specifier in declared().items():
        if name == "jaxlib":
            continue
        assert name in pins, f"{name}: declared {specifier} but tox's oldest environment does not pin it"
        minimum = release(specifier[2:])
        assert release(pins[name])[:len(minimum)] == minimum, f"{name}: declared {specifier}, tox pins {pins[name]}"
