"""Deployment options (replicas, autoscaling, CPUs and GPUs) from the LABS_RAY_* settings."""

from __future__ import annotations

import os
import re
from typing import Any

from labs_api.models import ModelKind
from labs_api.settings import Settings, env_name

APP_NAME = "labs-api"
INGRESS_NAME = "Ingress"

#: Deployment names by model kind (a second model of a kind gets a numbered name).
DEPLOYMENT_NAMES: dict[ModelKind, str] = {"chat": "Chat", "embedding": "Embedding",
                                          "speech": "Speech"}

#: Environment variables of the launching process that replicas get too: the model hubs'
#: (offline mode, cache, token) and the engines' thread settings. LABS_* are not needed:
#: the settings themselves travel with the deployments.
FORWARDED_ENV = re.compile(r"^(HF_|HUGGINGFACE_|TRANSFORMERS_|SENTENCE_TRANSFORMERS_|TORCH_HOME$)")

_DEFAULT_TARGET = {"embedding": 16.0, "speech": 2.0}
_DEFAULT_MAX_ONGOING = {"embedding": 256, "speech": 16}


def check(settings: Settings) -> None:
    """Refuse settings that cannot be deployed, naming the variables (``SystemExit``)."""
    for kind in DEPLOYMENT_NAMES:
        replicas = getattr(settings, f"ray_{kind}_replicas")
        most = getattr(settings, f"ray_{kind}_max_replicas")
        if most and most < replicas:
            raise SystemExit(
                f"labs-api: invalid {env_name(f'ray_{kind}_max_replicas')}={most}: must be 0 "
                f"(no autoscaling) or at least {env_name(f'ray_{kind}_replicas')}={replicas}")


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if FORWARDED_ENV.match(k)}


def model_options(settings: Settings, kind: ModelKind) -> dict[str, Any]:
    """``serve.deployment(...).options`` for the deployment of a model of ``kind``."""

    def get(name: str) -> Any:
        return getattr(settings, f"ray_{kind}_{name}")

    if kind == "chat":
        target = get("target_ongoing_requests") or float(settings.parallel)
        max_ongoing = get("max_ongoing_requests") or settings.parallel + settings.max_queue
    else:
        target = get("target_ongoing_requests") or _DEFAULT_TARGET[kind]
        max_ongoing = get("max_ongoing_requests") or _DEFAULT_MAX_ONGOING[kind]
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing,
        "ray_actor_options": actor_options(get("num_cpus"), get("num_gpus")),
        # A model replica takes a while to load: give it time before health checks count.
        "health_check_period_s": 10,
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": 10,
    }
    replicas = get("replicas")
    if get("max_replicas") > replicas:
        options["autoscaling_config"] = {
            "min_replicas": replicas,
            "initial_replicas": replicas,
            "max_replicas": get("max_replicas"),
            "target_ongoing_requests": target,
        }
    else:
        options["num_replicas"] = replicas
    return options


def ingress_options(settings: Settings) -> dict[str, Any]:
    return {
        "num_replicas": settings.ray_ingress_replicas,
        "max_ongoing_requests": settings.ray_ingress_max_ongoing_requests,
        "ray_actor_options": actor_options(settings.ray_ingress_num_cpus, 0.0),
        "graceful_shutdown_timeout_s": 10,
    }


def actor_options(num_cpus: float, num_gpus: float) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    env = forwarded_env()
    if env:
        options["runtime_env"] = {"env_vars": env}
    return options
