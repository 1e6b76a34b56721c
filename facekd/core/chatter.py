"""Keep the libraries facekd drives quiet unless the user asks (`facekd -v`).

Converters and runtimes print their own progress bars, INFO logs, deprecation warnings and C++ log
lines; a user sees what facekd says about their request instead. Quiet is switched on once per
command (:func:`quiet_libraries`) and inherited by every child process through the environment;
:func:`library_output` wraps a call into a library that prints to stdout.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

QUIET_ENV = "FACEKD_QUIET_LIBRARIES"
OWN_PACKAGES = ("facekd",)
# loggers of the libraries facekd drives (their children inherit the level)
LIBRARY_LOGGERS = ("torch", "torchao", "nncf", "coremltools", "absl", "onnxruntime", "onnxscript", "tensorflow",
                   "executorch", "litert_torch", "ai_edge_torch", "jax", "openvino", "root")
# native log levels read when a library loads: TensorFlow/LiteRT, glog, torch's C++ side
LIBRARY_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2", "TORCH_CPP_LOG_LEVEL": "ERROR",
               "TQDM_DISABLE": "1"}  # facekd's own bars pass `disable` explicitly and stay


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet() -> bool:
    return os.environ.get(QUIET_ENV) == "1"


def quiet_libraries() -> None:
    """Silence library warnings, logs below ERROR and progress bars in this process and its children."""
    os.environ[QUIET_ENV] = "1"
    for name, value in LIBRARY_ENV.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore")
    for package in OWN_PACKAGES:
        warnings.filterwarnings("default", module=rf"{package}(\.|$)")
    logging.getLogger().setLevel(logging.ERROR)
    _mute_library_loggers()


def _mute_library_loggers() -> None:
    """Libraries that set their own logger level on import (nncf, torch) get a filter that outlives it."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        if _errors_only not in logger.filters:
            logger.addFilter(_errors_only)


@contextlib.contextmanager
def library_output() -> Iterator[None]:
    """Around a call into a converter: when quiet, what it prints to stdout is dropped and the loggers it
    created on import are muted."""
    if not quiet():
        yield
        return
    if logging.getLogger().level < logging.ERROR:
        quiet_libraries()  # a spawned child process: re-apply what the parent set up
    _mute_library_loggers()  # torch and nncf reset their levels when they load
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            yield
        finally:
            _mute_library_loggers()
