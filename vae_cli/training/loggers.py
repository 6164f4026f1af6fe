"""Where a run's metrics go: Lightning's own loggers, chosen with `--logger csv,tensorboard,...`.

CSV is always written: it is the run's own record (resume, plots and sweep reports read
metrics.csv). TensorBoard is a dependency and on by default. MLflow and Weights & Biases are
optional extras; asking for one that is not installed is a one-line error naming the install
command. Every logger gets the resolved config (Lightning logs the module's hyperparameters
at the start of fit) and the per-step and per-epoch metrics the module logs.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any

from vae_cli.errors import VaeError
from vae_cli.settings import LOGGERS  # noqa: F401  (declared with the setting; checked in RunSettings.validate)

# logger -> (importable module, the pip command that provides it)
PACKAGES = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "mlflow": ("mlflow", "pip install 'vae-cli[mlflow]'"),
    "wandb": ("wandb", "pip install 'vae-cli[wandb]'"),
}
MLFLOW_DB = "mlflow.db"


def parse_loggers(text: str) -> list[str]:
    """'csv,tensorboard' -> ['csv', 'tensorboard']; csv first and always present."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    return ["csv", *dict.fromkeys(n for n in names if n != "csv")]


def require_packages(text: str) -> None:
    """Missing packages (and an MLflow server that does not answer), before a run (or a sweep)
    starts; not needed to evaluate a finished run."""
    for name in parse_loggers(text):
        module, install = PACKAGES.get(name, (None, ""))
        if module and importlib.util.find_spec(module) is None:
            raise VaeError(f"--logger {name} needs the {module} package, which is not installed: {install}")
    if "mlflow" in parse_loggers(text) and os.environ.get("MLFLOW_TRACKING_URI"):
        check_reachable(os.environ["MLFLOW_TRACKING_URI"])


def extra_loggers(names: list[str], run_dir: Path, hparams: dict[str, Any]) -> list[Any]:
    """The loggers besides CSV, all pointing at the run directory (or MLflow's server)."""
    from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    out: list[Any] = []
    name = run_dir.parent.name
    run_label = f"{name}/{run_dir.name}"
    if "tensorboard" in names:
        # log_dir IS run_dir (fit.make_loggers checks it)
        out.append(
            TensorBoardLogger(str(run_dir.parent), name="", version=run_dir.name, default_hp_metric=False)
        )
    if "mlflow" in names:
        # A tracking server when MLFLOW_TRACKING_URI says so; else a sqlite store in the run
        # directory (MLflow 3 refuses new plain-file stores).
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"
        local = "MLFLOW_TRACKING_URI" not in os.environ
        experiment = mlflow_experiment(hparams, name)
        out.append(
            MLFlowLogger(
                experiment_name=experiment,
                run_name=run_label,
                tracking_uri=uri,
                artifact_location=(run_dir / "mlflow-artifacts").resolve().as_uri() if local else None,
            )
        )
    if "wandb" in names:
        offline = not wandb_logged_in()
        out.append(
            WandbLogger(
                name=run_label,
                project=os.environ.get("WANDB_PROJECT", "vae-cli"),
                save_dir=str(run_dir),
                offline=offline,
            )
        )
    return out


def mlflow_experiment(hparams: dict[str, Any], folder: str) -> str:
    """The MLflow experiment a run logs to: its experiment setting, else its folder's name."""
    return str(hparams.get("experiment") or folder)


def prepare_mlflow(experiments: set[str]) -> None:
    """Before a sweep's members start, with MLFLOW_TRACKING_URI set (a store they all share):
    refuse a server that does not answer (mlflow's own retries take minutes, then fail every
    member), and create the store and the experiments once, here: members starting at once
    would each migrate a fresh sqlite store (alembic) or create the same experiment, and race."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return  # each run gets its own store in its own directory: nothing is shared
    check_reachable(uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        for name in sorted(experiments):
            if client.get_experiment_by_name(name) is None:
                client.create_experiment(name)
    except MlflowException as e:
        raise VaeError(f"MLFLOW_TRACKING_URI={uri}: {str(e).strip().splitlines()[0]}") from None


def check_reachable(uri: str, timeout_s: float = 3.0) -> None:
    """An http(s) tracking server must accept a connection within timeout_s."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s).close()
    except OSError as e:
        raise VaeError(
            f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers there ({e.strerror or e}); start it, "
            f"or unset MLFLOW_TRACKING_URI to log into each run's own folder"
        ) from None


def finish(names: list[str]) -> None:
    """Close the W&B run so its file is complete when fit returns (a sweep's next member, a
    test reading it); Lightning leaves it open until the process exits."""
    if "wandb" in names:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return True
    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)
