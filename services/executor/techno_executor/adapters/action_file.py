"""Loads the action catalogue from its YAML file (``config/actions.yaml``) and validates it.

An invalid file refuses to start the executor: ``load_catalogue`` raises ``ActionCatalogError`` with one line
that names the file and what is wrong. Nothing is fetched: a file path is all it reads.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import ValidationError

from techno_executor.domain.actions import ActionCatalogError, ActionCatalogue, ActionsDocument

__all__ = ["SHIPPED_ACTIONS_FILE", "ActionCatalogError", "load_catalogue", "shipped_catalogue"]

# The repository's config/actions.yaml (adapters → techno_executor → executor → services → repository root).
SHIPPED_ACTIONS_FILE = Path(__file__).resolve().parents[4] / "config" / "actions.yaml"


def load_catalogue(path: Path) -> ActionCatalogue:
    try:
        source = path.read_bytes()
    except OSError as error:
        raise ActionCatalogError(f"cannot read action catalogue {path}: {error.strerror}") from error
    try:
        document = ActionsDocument.model_validate(yaml.safe_load(source))
    except yaml.YAMLError as error:
        raise ActionCatalogError(f"invalid action catalogue {path}: not YAML: {_one_line(str(error))}") from error
    except ValidationError as error:
        raise ActionCatalogError(f"invalid action catalogue {path}: {_describe(error)}") from error
    return ActionCatalogue.from_document(document)


@functools.cache
def shipped_catalogue() -> ActionCatalogue:
    """The shipped file's catalogue, read once (an ``ActionCatalogue`` is never changed after it is built)."""
    return load_catalogue(SHIPPED_ACTIONS_FILE)


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "the document"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return _one_line("; ".join(problems))


def _one_line(text: str) -> str:
    return " ".join(text.split())
