"""Bringing the models up, on the worker thread: the service, then the catalogue, each failure kept as a message.

Nothing here touches widgets: `load_service` returns the service and a `LoadResult` that the window shows.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class LoadResult:
    device: str
    error: str | None = None          # the models could not all be loaded (images can't be drawn)
    error_file: str | None = None     # the file that is missing or damaged
    catalog_error: str | None = None  # similar products unavailable
    similar: bool = False
    notice: str | None = None         # e.g. "no GPU: using the CPU"


def limit_cpu_threads() -> int:
    """Leave one core to the window: torch's CPU thread pool gets the others (at least one).

    Besides keeping the UI responsive, this avoids oversubscription: on a busy two-core machine, two
    spinning OpenMP threads made a request 20-50x slower than one (measured: 10-20 s against 0.2-0.7 s).
    FASHIONGAN_THREADS or OMP_NUM_THREADS override it (models.sampling.choose_torch_threads decides).
    """
    from models.sampling import limit_torch_threads

    return limit_torch_threads(spare_cores=1)


def default_service_factory(catalog: str | None = None) -> Callable[[str], object]:
    def make(device: str):
        from app.chat.service import ModelService  # imported on the worker thread: the window is already up

        return ModelService(catalog=catalog, device=device)

    return make


def load_service(service_factory: Callable[[str], object], device: str,
                 progress: Callable[[str], None]) -> tuple[object, LoadResult]:
    """The service for `device` (the CPU when CUDA is asked for but missing), loaded; what failed is in the result."""
    notice = None
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            notice = "No CUDA GPU found: using the CPU."
            device = "cpu"
    service = service_factory(device)
    error = error_file = None
    try:
        service.load(progress)
    except Exception as exc:  # noqa: BLE001 - reported in a dialog; the chat still works without images
        log.exception("loading the models failed")
        error = str(exc) or type(exc).__name__
        error_file = _file_in(error) or str(getattr(service, "weights", None) or _bundled_weights())
    catalog_error, similar = None, False
    if hasattr(service, "similar_products"):
        if getattr(service, "retriever", None) is not None:  # load() brought the catalogue up too
            similar = True
        elif getattr(service, "catalog_error", None):
            catalog_error = service.catalog_error
        elif hasattr(service, "load_catalog"):
            try:
                service.load_catalog(progress)
                similar = True
            except Exception as exc:  # noqa: BLE001 - similar products are optional
                log.warning("similar products unavailable: %s", exc)
                catalog_error = str(exc) or type(exc).__name__
        else:
            similar = True
    device_name = getattr(service, "device_name", "CPU") if error is None else "not loaded"
    return service, LoadResult(device_name, error, error_file, catalog_error, similar, notice)


def _file_in(message: str) -> str | None:
    """The first path-looking word of an error message ("checkpoint not found: weights/generator.pt")."""
    for word in message.replace("(", " ").replace(")", " ").split():
        word = word.strip(":,'\"")
        if word.endswith((".pt", ".pth", ".npz", ".json", ".safetensors")) or (os.sep in word and "." in word):
            return word
    return None


def _bundled_weights() -> str:
    from models.resources import GENERATOR_WEIGHTS

    return str(GENERATOR_WEIGHTS)
