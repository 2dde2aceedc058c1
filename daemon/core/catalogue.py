"""Lookup in the bundled architecture catalogue (:mod:`daemon.core.catalogue_data`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.core.catalogue_data import CATALOGUE
from daemon.core.naming import size_value


@dataclass(frozen=True, kw_only=True)
class CatalogueEntry:
    """One model variant: its Xinference name and size, Hugging Face repo and config fields."""

    name: str
    size_in_billions: float | None
    hf_repo: str
    model_type: str
    params: int | None
    config: Mapping[str, Any]
    aliases: tuple[str, ...] = ()


def _entries() -> tuple[CatalogueEntry, ...]:
    out = []
    for raw in CATALOGUE:
        params = raw.get("params_billions")
        aliases = raw.get("aliases") or ()
        out.append(
            CatalogueEntry(
                name=str(raw["xinference_name"]),
                size_in_billions=size_value(raw.get("size_in_billions")),
                hf_repo=str(raw.get("hf_repo", "")),
                model_type=str(raw.get("model_type", "LLM")),
                params=round(float(params) * 1e9) if isinstance(params, int | float) else None,
                config=dict(raw["config"]),  # type: ignore[call-overload]  # data file: dict literal
                aliases=tuple(str(a) for a in aliases),  # type: ignore[attr-defined]
            )
        )
    return tuple(out)


ENTRIES: tuple[CatalogueEntry, ...] = _entries()


def find(name: str, size_in_billions: object = None) -> CatalogueEntry | None:
    """The entry for an Xinference model name (or HF repo id) and size; None when unknown.

    With no size, a name that has exactly one size variant still matches.
    """
    wanted = name.lower()
    size = size_value(size_in_billions)
    matches = [
        e
        for e in ENTRIES
        if wanted in {e.name.lower(), e.hf_repo.lower(), *(a.lower() for a in e.aliases)}
    ]
    if size is not None:
        matches = [
            e
            for e in matches
            if e.size_in_billions is None or abs(e.size_in_billions - size) < 1e-6
        ]
    if len(matches) == 1:
        return matches[0]
    return None


def sizes_for(name: str) -> tuple[float, ...]:
    """Size variants the catalogue holds for ``name`` (for error messages)."""
    wanted = name.lower()
    return tuple(
        sorted(
            e.size_in_billions
            for e in ENTRIES
            if e.size_in_billions is not None
            and wanted in {e.name.lower(), *(a.lower() for a in e.aliases)}
        )
    )
