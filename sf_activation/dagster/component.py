"""The models directory as a Dagster Component, for projects laid out the way `dg` expects.

    dg scaffold defs sf_activation.dagster.component.SfActivationComponent syncs

writes `defs/syncs/defs.yaml` (and an example model). The Component builds the same
definitions as `build_definitions` (assets, the `rejected_rows` check, jobs, schedules,
sensors, resources), named by an `SfActivationTranslator`; `translation` and the
defs.yaml's `post_processing` set owners, tags, groups, kinds and automation conditions.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from dagster.components import scaffold_component
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver
from pydantic import BaseModel, Field

from sf_activation.dagster.definitions import build_definitions
from sf_activation.dagster.translator import Layer, SfActivationTranslator
from sf_activation.models import ModelSpec

__all__ = [
    "SfActivationAssetData",
    "SfActivationComponent",
    "SfActivationScaffolder",
]


@dataclass(frozen=True)
class SfActivationAssetData:
    """What `translation` sees of one asset: the template variables `model` (the model
    file: `model.name`, `model.object`, `model.operation`, ...) and `layer`
    (`warehouse` or `salesforce`)."""

    model: ModelSpec
    layer: Layer


class _TranslatedTranslator(SfActivationTranslator):
    """A translator with the defs.yaml's `translation` applied on top of another one."""

    def __init__(
        self,
        base: SfActivationTranslator,
        translation: TranslationFn[SfActivationAssetData],
    ) -> None:
        super().__init__()
        self._base = base
        self._translation = translation

    # Keys, groups and dbt keys stay the base translator's (a subclass's overrides too).

    def get_asset_key(self, layer: Layer, model: str) -> dg.AssetKey:
        return self._base.get_asset_key(layer, model)

    def get_group_name(self, layer: Layer, model: str) -> str | None:
        return self._base.get_group_name(layer, model)

    def get_dbt_asset_key(self, dbt_model: str) -> dg.AssetKey:
        return self._base.get_dbt_asset_key(dbt_model)

    def get_dbt_asset_spec(self, key: dg.AssetKey, readers: Sequence[str]) -> dg.AssetSpec:
        return self._base.get_dbt_asset_spec(key, readers)

    def get_asset_spec(self, layer: Layer, model: ModelSpec, spec: dg.AssetSpec) -> dg.AssetSpec:
        base_spec = self._base.get_asset_spec(layer, model, spec)
        translated = self._translation(base_spec, SfActivationAssetData(model, layer))
        if translated.key != base_spec.key:
            # Jobs, schedules and sensors select the keys the translator gave before this.
            raise dg.DagsterInvalidDefinitionError(
                f"translation changed the key of {base_spec.key.to_user_string()} to "
                f"{translated.key.to_user_string()}; the keys of {model.display_path} are "
                "set by a SfActivationTranslator subclass (get_asset_key), not by translation"
            )
        return translated


def _template_vars(data: SfActivationAssetData) -> Mapping[str, Any]:
    return {"model": data.model, "layer": data.layer}


class SfActivationScaffoldParams(BaseModel):
    """`dg scaffold defs sf_activation.dagster.component.SfActivationComponent PATH
    [--models-dir DIR]`."""

    models_dir: str | None = Field(
        default=None,
        description=(
            "An existing models directory to sync; without it, a models/ directory with one "
            "example model is created beside the defs.yaml"
        ),
    )


EXAMPLE_MODEL_YAML = """\
# One model file = one sync: the query's rows become records of one Salesforce object.
# The file's name (example_contacts) names the assets: warehouse/example_contacts and
# salesforce/example_contacts. Edit this example or replace it with your models.
description: Example model; replace the query and the mapping with yours.
object: Contact
operation: upsert
primary_key: contact_id
external_id: External_Id__c
sql: example_contacts.sql
fields:
  contact_id: External_Id__c
  last_name: LastName
  email: Email
redact: [Email]
"""

EXAMPLE_MODEL_SQL = """\
-- The rows to send: one per Contact, with the columns `fields:` maps.
SELECT contact_id, last_name, email
FROM crm_contacts
"""


class SfActivationScaffolder(dg.Scaffolder[SfActivationScaffoldParams]):
    """Writes a defs.yaml that names the models directory (and, when none is given, a
    models/ directory with an example model, so the scaffolded definitions load)."""

    @classmethod
    def get_scaffold_params(cls) -> type[SfActivationScaffoldParams]:
        return SfActivationScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[SfActivationScaffoldParams]) -> None:
        given = request.params.models_dir if request.params else None
        if given is None:
            models = request.target_path / "models"
            models.mkdir(parents=True, exist_ok=True)
            (models / "example_contacts.yml").write_text(EXAMPLE_MODEL_YAML, encoding="utf-8")
            (models / "example_contacts.sql").write_text(EXAMPLE_MODEL_SQL, encoding="utf-8")
            models_dir = "models"
        else:
            models_dir = _models_dir_attribute(Path(given), request.project_root)
        scaffold_component(request, {"models_dir": models_dir})


def _models_dir_attribute(path: Path, project_root: Path | None) -> str:
    """How defs.yaml names an existing directory: from the project root when it is inside
    the project (so the defs folder can move), else as an absolute path."""
    absolute = (path if path.is_absolute() else Path.cwd() / path).resolve()
    root = (project_root or Path.cwd()).resolve()
    if absolute.is_relative_to(root):
        relative = absolute.relative_to(root).as_posix()
        return "{{ context.project_root }}" + ("" if relative == "." else f"/{relative}")
    return str(absolute)


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


@dg.scaffold_with(SfActivationScaffolder)
class SfActivationComponent(dg.Component, dg.Resolvable, dg.Model):
    """Syncs a directory of sf_activation model files into Salesforce.

    Each model file becomes the assets `warehouse/<model>` (the plan) and
    `salesforce/<model>` (the sync, with the `rejected_rows` check), the job
    `sync_<model>`, its schedule (`schedule:`) and the dbt sensors (`dbt_models:`), with
    the resources `salesforce` and `sync_settings` read from the environment as the
    `sf_activation.definitions` code location does.

    .. code-block:: yaml

        # defs.yaml
        type: sf_activation.dagster.component.SfActivationComponent
        attributes:
          models_dir: models            # relative to this file's folder
          translation:
            owners: [team:revops]
            tags: {sf_object: "{{ model.object }}"}
    """

    models_dir: Annotated[
        str,
        Field(
            description=(
                "The directory of model files (*.yml and their SQL), relative to the folder "
                "of this defs.yaml, or `{{ context.project_root }}/...`."
            ),
            examples=["models", "{{ context.project_root }}/models"],
        ),
    ]
    declare_dbt_assets: Annotated[
        bool,
        Field(
            description=(
                "Declare the dbt models named in `dbt_models` as external assets (group "
                "`dbt`). Set false when dagster-dbt loads the dbt project into the same "
                "code location: its assets own those keys."
            )
        ),
    ] = True
    automation: Annotated[
        bool,
        Field(
            description=(
                "Automation conditions on the assets of models with `dbt_models`, and the "
                "sensor `sf_activation_automation` (stopped until switched on) that syncs "
                "after the dbt models are materialized in this deployment."
            )
        ),
    ] = True
    dbt_target_dir: Annotated[
        str | None,
        Field(
            description=(
                "dbt's target directory, read by `dbt_run_results_sensor` (relative to this "
                "defs.yaml's folder); default SF_ACTIVATION_DBT_TARGET_DIR at each tick."
            )
        ),
    ] = None
    dbt_manifest: Annotated[
        str | None,
        Field(
            description=(
                "The dbt project's manifest.json (relative to this defs.yaml's folder): the "
                "names in `dbt_models` get the keys dagster-dbt gives those dbt nodes."
            )
        ),
    ] = None
    bind_resources: Annotated[
        bool,
        Field(
            description=(
                "Bind the resources `salesforce` and `sync_settings` from the environment. "
                "Set false when the project's own definitions bind them."
            )
        ),
    ] = True
    translation: Annotated[
        Annotated[
            TranslationFn[SfActivationAssetData] | None,
            TranslationFnResolver(template_vars_for_translation_fn=_template_vars),
        ],
        Field(
            description=(
                "Attributes for every warehouse/ and salesforce/ asset (owners, tags, "
                "group_name, kinds, metadata, description, automation_condition); templates "
                "see `model` (the model file), `layer` and `spec`. Keys cannot be changed."
            ),
        ),
    ] = None

    def get_translator(self, context: dg.ComponentLoadContext) -> SfActivationTranslator:
        """The translator before `translation`; override to return a subclass."""
        if self.dbt_manifest is None:
            return SfActivationTranslator()
        return SfActivationTranslator(dbt_manifest=_relative_to(context.path, self.dbt_manifest))

    def get_resources(self, context: dg.ComponentLoadContext) -> Mapping[str, Any] | None:
        """The resources bound with the assets; None: `resources_from_env()`."""
        return None if self.bind_resources else {}

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        translator = self.get_translator(context)
        if self.translation is not None:
            translator = _TranslatedTranslator(translator, self.translation)
        target_dir = self.dbt_target_dir
        return build_definitions(
            _relative_to(context.path, self.models_dir),
            resources=self.get_resources(context),
            declare_dbt_assets=self.declare_dbt_assets,
            automation=self.automation,
            dbt_target_dir=(
                os.fspath(_relative_to(context.path, target_dir)) if target_dir else None
            ),
            translator=translator,
        )
