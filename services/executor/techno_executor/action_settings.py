"""Configuration of the executor's action catalogue (``TECHNO_EXECUTOR_ACTIONS_FILE``). A mixin of the
executor's settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from techno_core.settings import TECHNO_CONFIG


class ActionSettings(BaseSettings):
    """Mixin: where the action catalogue (prompt templates, input and output schemas) is read from."""

    model_config = TECHNO_CONFIG

    executor_actions_file: str = Field(
        "config/actions.yaml",
        description="YAML action catalogue: each action's prompt template, input fields and output schema; "
        "an invalid file refuses to start.",
    )
