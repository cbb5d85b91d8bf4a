"""Write a clean chapter notebook from a ``# %%`` percent-format script (for developers starting
a chapter: ``python tests/nbtools.py notebooks/src/NN_name.py`` writes ``notebooks/NN_name.ipynb``),
and :func:`is_clean`, which the tests use."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat


def cells_from_percent(text: str) -> list:
    """Split a ``# %%`` percent-format script into cells (``# %% [markdown]`` for prose,
    ``# %% tags=["parameters"]`` for the parameters cell)."""
    cells, kind, tags, buf = [], None, [], []

    def flush():
        if kind is None:
            return
        src = "\n".join(buf).strip("\n")
        if kind == "markdown":
            src = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in src.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            c = nbformat.v4.new_code_cell(src)
            if tags:
                c.metadata["tags"] = tags
            cells.append(c)

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            head = line[4:].strip()
            kind = "markdown" if head.startswith("[markdown]") else "code"
            tags = json.loads(head.split("=", 1)[1]) if head.startswith("tags=") else []
            buf = []
        else:
            buf.append(line)
    flush()
    return cells


def write_notebook(src: Path, dst: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells_from_percent(Path(src).read_text())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
    nbformat.write(nb, str(dst))


def is_clean(path) -> bool:
    """No outputs, no execution counts, one cell tagged ``parameters``, and every cell has the id
    nbformat 4.5 requires (read from the file: nbformat fills missing ids in silently)."""
    raw = json.loads(Path(path).read_text())
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    return (all(not c.outputs and c.execution_count is None for c in code)
            and sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
            and all(c.get("id") for c in raw["cells"]))


if __name__ == "__main__":
    import sys

    for s in sys.argv[1:]:
        src = Path(s)
        write_notebook(src, src.parent.parent / f"{src.stem}.ipynb")
        print("wrote", src.parent.parent / f"{src.stem}.ipynb")
