"""Maps the top-level folders onto the one package ``shiftpu`` (``compiler/`` is ``shiftpu.compiler``, ...).

Metadata lives in pyproject.toml; this file only computes the package list, so that new subpackages
need no registration and no top-level ``compiler``/``hw``/``sim``/``sw`` module is ever installed.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "shiftpu": "shiftpu",
    "shiftpu.compiler": "compiler",
    "shiftpu.hw": "hw",
    "shiftpu.sim": "sim",
    "shiftpu.sw": "sw",
    "shiftpu.boards": "boards",
}

packages: list[str] = []
for name, folder in FOLDERS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder) if f"{name}.{sub}" not in FOLDERS]

setup(packages=packages, package_dir=FOLDERS)
