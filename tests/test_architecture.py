"""The house's tiers, held over the import graph: what each folder's docstring promises about its imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# room -> the rooms of `render` it may import (render/__init__.py: commands > farm > pipeline > latent > faces,
# models > kernels); faces need no model, so they are apart from models and kernels
RENDER_ROOMS = {
    "kernels": {"kernels"},
    "models": {"models", "kernels"},
    "faces": {"faces"},
    "latent": {"latent", "faces", "models", "kernels"},
    "pipeline": {"pipeline", "latent", "faces", "models", "kernels"},
    "farm": {"farm", "pipeline", "latent", "faces", "models", "kernels"},
    "commands": {"commands", "farm", "pipeline", "latent", "faces", "models", "kernels"},
}
TORCH_FREE = ("torch", "torchvision", "open_clip", "render")
# folder -> the packages outside the standard library that its docstring lets it import, this project's included
# (which rooms of `render`, RENDER_ROOMS says)
PACKAGES = {
    "render/kernels": {"render", "torch", "numpy"},
    "render/models": {"render", "torch", "numpy"},
    "render/faces": {"render", "sequences", "numpy", "PIL", "dlib"},
    "render/latent": {"render", "sequences", "torch", "numpy", "PIL", "open_clip"},
    "render/pipeline": {"render", "sequences", "torch", "numpy", "PIL", "matplotlib", "tqdm", "pythonosc"},
    "render/farm": {"render", "sequences", "torch", "numpy", "tqdm", "ray"},
    "render/commands": {"render", "sequences", "torch", "numpy", "tqdm"},
    "sequences": {"sequences", "numpy", "imageio_ffmpeg"},
    "installation": {"installation", "sequences", "numpy", "pygame", "pythonosc", "imageio_ffmpeg"},
}


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function, as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from render import x` names room x
    return names


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_every_render_module_lives_in_a_room_with_a_docstring_saying_what_it_may_import():
    loose = [p.name for p in (ROOT / "render").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a room: {loose}"
    rooms = {p.name for p in (ROOT / "render").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == set(RENDER_ROOMS)
    for folder in [ROOT / "render", ROOT / "sequences", ROOT / "installation",
                   *[p.parent for p in (ROOT / "render").rglob("__init__.py")]]:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"{folder.relative_to(ROOT)}/__init__.py: no docstring on imports"


@pytest.mark.parametrize("room", sorted(RENDER_ROOMS))
def test_a_room_imports_only_itself_and_the_rooms_below(room):
    bad = []
    for path in modules(f"render/{room}"):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "render" and len(parts) > 1 and parts[1] in RENDER_ROOMS and parts[1] not in RENDER_ROOMS[room]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            if parts[0] == "installation":
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_a_folder_imports_only_the_packages_its_docstring_names(folder):
    allowed = PACKAGES[folder] | set(sys.stdlib_module_names) | {"__future__"}
    bad = [f"{p.relative_to(ROOT)} imports {name}" for p in modules(folder) for name in imports_of(p)
           if name.split(".")[0] not in allowed]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", ["installation", "sequences"])
def test_the_player_and_the_sequence_layer_never_import_torch_or_render(package):
    bad = [f"{p.relative_to(ROOT)} imports {name}" for p in modules(package) for name in imports_of(p)
           if name.split(".")[0] in TORCH_FREE]
    assert not bad, "\n".join(bad)


def test_the_player_starts_without_torch_in_the_process():
    """Statically clean is not enough if a dependency pulls torch in: import every player module and look."""
    names = [f"installation.{p.stem}" for p in modules("installation") if p.stem != "__init__"]
    names += ["sequences.config", "sequences.manifest", "sequences.sequence", "sequences.video", "sequences.atomic"]
    code = "import sys\n" + "".join(f"import {n}\n" for n in names) + \
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'render', 'open_clip')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
