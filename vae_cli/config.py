"""The old name of vae_cli.settings, kept so that `from vae_cli.config import Config` still works.

Every setting is declared in vae_cli/settings.py; add new ones there.
"""

from vae_cli.settings import (
    FIELDS,
    Config,
    Experiments,
    RunSettings,
    experiments_files,
    from_dict,
    read_yaml,
    resolve,
    resolve_all,
    run_settings,
)

__all__ = [
    "FIELDS",
    "Config",
    "Experiments",
    "RunSettings",
    "experiments_files",
    "from_dict",
    "read_yaml",
    "resolve",
    "resolve_all",
    "run_settings",
]
