"""Build hook: compile the native runtime and ship it (and templates/) inside the wheel.

Everything else lives in pyproject.toml. An editable install finds native/build and
templates/ in the checkout instead (see provisioner/native.py and provisioner/templating.py).
"""
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithNative(build_py):
    def run(self):
        pkg = Path(self.build_lib) / "provisioner"
        if not self.editable_mode:
            # build_py only adds and updates: a module deleted from the source would stay in an
            # in-tree build/lib and ship in the next wheel
            shutil.rmtree(pkg, ignore_errors=True)
        super().run()
        if self.editable_mode:
            return
        # The C binaries: the OCI runtime and the per-container supervision shim.
        for subdir, name in (("native", "provision-runtime"), ("native/shim", "provision-shim")):
            if (HERE / subdir / "Makefile").exists():
                subprocess.run(["make", "-s", "-C", str(HERE / subdir)], check=True)
                (pkg / "_bin").mkdir(parents=True, exist_ok=True)
                shutil.copy2(HERE / subdir / "build" / name, pkg / "_bin" / name)
        if (HERE / "templates").is_dir():
            shutil.copytree(HERE / "templates", pkg / "_templates", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithNative})
