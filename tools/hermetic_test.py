"""Proves py_test targets run on the hermetic venv interpreter, not the host's packages.

Run: bazel test //tools:hermetic_test
"""

import importlib.util
import os
import site
import sys
import sysconfig
import unittest


def _host_site_dirs():
    """site-packages of the interpreter the venv was built from (the host python3)."""
    dirs = set()
    for scheme_key in ("purelib", "platlib"):
        path = sysconfig.get_path(
            scheme_key, vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
        )
        dirs.add(os.path.realpath(path))
    return dirs


class HermeticPythonTest(unittest.TestCase):
    def test_runs_inside_the_pyenv_venv(self):
        self.assertNotEqual(sys.prefix, sys.base_prefix, "not running inside a venv")
        self.assertIn(os.sep + "pyenv" + os.sep + "venv", sys.prefix)
        self.assertGreaterEqual(sys.version_info[:2], (3, 11))

    def test_host_site_packages_not_on_path(self):
        host = _host_site_dirs()
        on_path = {os.path.realpath(p) for p in sys.path}
        self.assertFalse(host & on_path, f"host site-packages leaked into sys.path: {host & on_path}")
        self.assertFalse(site.ENABLE_USER_SITE and site.USER_SITE in sys.path)

    def test_locked_packages_come_from_the_venv(self):
        venv_site = os.path.realpath(sysconfig.get_paths()["purelib"])
        self.assertTrue(venv_site.startswith(os.path.realpath(sys.prefix)))
        for name in ("numpy", "jax", "flax", "transformers", "pybind11"):
            spec = importlib.util.find_spec(name)
            self.assertIsNotNone(spec, name)
            self.assertTrue(os.path.realpath(spec.origin).startswith(venv_site), (name, spec.origin))

    def test_locked_versions(self):
        import numpy  # noqa: F401  (import proves the locked build loads)
        from importlib.metadata import version

        lock = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"], "requirements_lock.txt")
        pins = {}
        with open(lock, encoding="utf-8") as f:
            for line in f:
                if "==" in line and not line.startswith((" ", "#")):
                    name, rest = line.split("==", 1)
                    ver = rest.split()[0].strip(" \\;")
                    marker = rest.split(";", 1)[1] if ";" in rest else ""
                    if "python_full_version >= '3.12'" in marker and sys.version_info < (3, 12):
                        continue
                    if "python_full_version < '3.12'" in marker and sys.version_info >= (3, 12):
                        continue
                    if "darwin" in marker and "linux" not in marker and sys.platform != "darwin":
                        continue
                    pins[name.strip().split("[")[0]] = ver
        for name in ("jax", "flax", "transformers", "numpy", "torch"):
            self.assertEqual(version(name), pins[name], name)


if __name__ == "__main__":
    unittest.main()
