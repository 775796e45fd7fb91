"""Naming: which asset keys and groups the models' assets get, and the keys of the dbt
models they read.

Every place that builds a key or a group (the assets, their jobs, the sensors' targets,
the automation selection, the declared dbt assets) asks one `SfActivationTranslator`, so
a subclass changes them all together. It follows the pattern of dagster-dbt's
`DagsterDbtTranslator`: subclass, override a `get_*` method, pass an instance to
`build_definitions(..., translator=...)` or to the Component.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg

from sf_activation.models import ModelError, ModelSpec

if TYPE_CHECKING:
    from dagster_dbt import DagsterDbtTranslator, DbtProject

GROUP_NAME = "sf_activation"
DBT_GROUP_NAME = "dbt"

Layer = Literal["warehouse", "salesforce"]
"""`warehouse`: the plan asset (the model's query); `salesforce`: the sync asset."""

# What dagster-dbt turns into assets (dagster_dbt.utils.ASSET_RESOURCE_TYPES).
_DBT_ASSET_RESOURCE_TYPES = ("model", "seed", "snapshot")


def warehouse_key(model: str) -> dg.AssetKey:
    """The default key of a model's plan asset: `warehouse/<model>`."""
    return dg.AssetKey(["warehouse", model])


def salesforce_key(model: str) -> dg.AssetKey:
    """The default key of a model's sync asset: `salesforce/<model>`."""
    return dg.AssetKey(["salesforce", model])


def dbt_asset_key(name: str) -> dg.AssetKey:
    """`fct_accounts` -> AssetKey(["fct_accounts"]) (dagster-dbt's default key for a model);
    `analytics/fct_accounts` for a project whose translator prefixes keys."""
    return dg.AssetKey([part for part in name.split("/") if part])


class SfActivationTranslator:
    """Decides the asset keys and groups of the models' assets.

    The defaults: `warehouse/<model>` and `salesforce/<model>` in the group
    `sf_activation`; a dbt model named in `dbt_models` has the key dagster-dbt gives it
    by default (its name; `a/b/name` is taken as the key's path).

    With dbt loaded into the same deployment by dagster-dbt under a custom
    `DagsterDbtTranslator`, pass the dbt project's manifest and that translator: a name
    in `dbt_models` is then looked up in the manifest and gets the key that translator
    gives the node, the same key `@dbt_assets` (or dagster-dbt's Component) builds::

        SfActivationTranslator(
            dbt_manifest=dbt_project.manifest_path,
            dagster_dbt_translator=MyDagsterDbtTranslator(),
        )

    A name containing `/` is still taken as a key's path, without the manifest.

    Subclass and override `get_asset_key`, `get_group_name`, `get_dbt_asset_key`,
    `get_dbt_asset_spec` or `get_asset_spec` to change the rest.
    """

    def __init__(
        self,
        *,
        dbt_manifest: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        dagster_dbt_translator: DagsterDbtTranslator | None = None,
        dbt_project: DbtProject | None = None,
    ) -> None:
        if dagster_dbt_translator is not None and dbt_manifest is None:
            raise ValueError(
                "dagster_dbt_translator needs dbt_manifest: the translator reads the "
                "dbt node's properties from the manifest"
            )
        self._dbt_manifest_source = dbt_manifest
        self._dagster_dbt_translator = dagster_dbt_translator
        self._dbt_project = dbt_project

    # ---------------------------------------------------------------- the models' assets

    # Keys and groups are asked by model name: an asset that depends on another model's
    # sync asset knows only that model's name.

    def get_asset_key(self, layer: Layer, model: str) -> dg.AssetKey:
        """The key of model `model`'s `warehouse` (plan) or `salesforce` (sync) asset."""
        return warehouse_key(model) if layer == "warehouse" else salesforce_key(model)

    def get_group_name(self, layer: Layer, model: str) -> str | None:
        """The group of model `model`'s asset in the UI's lineage view."""
        return GROUP_NAME

    def get_asset_spec(self, layer: Layer, model: ModelSpec, spec: dg.AssetSpec) -> dg.AssetSpec:
        """The last word on an asset's attributes (owners, tags, kinds, metadata,
        description, automation condition), given the spec built from the model file.

        It must keep `spec.key` (override `get_asset_key` to change keys: jobs and
        sensors select by key). It is not asked about `deps`.
        """
        return spec

    # ---------------------------------------------------------------- the dbt models read

    def get_dbt_asset_key(self, dbt_model: str) -> dg.AssetKey:
        """The key of a dbt model named in a model file's `dbt_models`."""
        if self._dbt_manifest_source is None or "/" in dbt_model:
            return dbt_asset_key(dbt_model)
        return self._dbt_key_from_manifest(dbt_model)

    def get_dbt_asset_spec(self, key: dg.AssetKey, readers: Sequence[str]) -> dg.AssetSpec:
        """A dbt model declared as an external asset (dbt runs outside this code location;
        `declare_dbt_assets=True`); `readers` are the models that read it."""
        return dg.AssetSpec(
            key,
            group_name=DBT_GROUP_NAME,
            kinds={"dbt"},
            description=f"dbt model read by {', '.join(readers)}; built outside Dagster",
        )

    # ---------------------------------------------------------------- dagster-dbt

    @cached_property
    def _dbt_manifest(self) -> Mapping[str, Any]:
        source = self._dbt_manifest_source
        if isinstance(source, Mapping):
            return source
        assert source is not None
        path = Path(source)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the dbt manifest {path}: {exc}") from exc

    @cached_property
    def _dbt_translator(self) -> DagsterDbtTranslator:
        if self._dagster_dbt_translator is not None:
            return self._dagster_dbt_translator
        # Imported here: only deployments that name a manifest pay for dagster-dbt.
        from dagster_dbt import DagsterDbtTranslator

        return DagsterDbtTranslator()

    @cached_property
    def _dbt_nodes_by_name(self) -> dict[str, list[str]]:
        manifest = self._dbt_manifest
        root_package = (manifest.get("metadata") or {}).get("project_name")
        by_name: dict[str, list[tuple[tuple[int, int], str]]] = {}
        for unique_id, node in (manifest.get("nodes") or {}).items():
            if node.get("resource_type") not in _DBT_ASSET_RESOURCE_TYPES:
                continue
            # A name can be in several packages, or in several versions of one model:
            # the root project's node first, then a model's latest version.
            version = node.get("version")
            rank = (
                0 if node.get("package_name") == root_package else 1,
                0 if version is None or version == node.get("latest_version") else 1,
            )
            by_name.setdefault(str(node.get("name")), []).append((rank, unique_id))
        return {name: [uid for _, uid in sorted(ids)] for name, ids in by_name.items()}

    def _dbt_key_from_manifest(self, dbt_model: str) -> dg.AssetKey:
        unique_ids = self._dbt_nodes_by_name.get(dbt_model)
        if not unique_ids:
            raise ModelError(
                f"dbt_models: {dbt_model!r} is not a model, seed or snapshot in the dbt "
                f"manifest ({len(self._dbt_nodes_by_name)} names there)"
            )
        # get_asset_spec, not get_asset_key: it is what @dbt_assets calls, so a translator
        # overriding either gives the key the dbt assets have.
        spec = self._dbt_translator.get_asset_spec(
            self._dbt_manifest, unique_ids[0], self._dbt_project
        )
        return spec.key
