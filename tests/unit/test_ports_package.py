"""`broker.ports` loads its submodules on first use; every name it exports resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import broker.ports as ports


def test_every_exported_port_resolves_to_its_module_s_object() -> None:
    for name in ports.__all__:
        home = importlib.import_module(ports._WHERE[name])
        assert getattr(ports, name) is getattr(home, name)


def test_importing_one_port_loads_no_other_use_case() -> None:
    code = (
        "import sys, broker.ports.access; "
        "print(sorted(m for m in sys.modules if m.startswith('broker.ports.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "broker.ports.cds" not in out.stdout and "broker.ports.fhir" not in out.stdout
