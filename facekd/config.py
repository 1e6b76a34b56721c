"""One typed run config: dataclass sections from each stage, loaded from YAML + `--set` overrides.

    cfg = load_config("configs/demo.yaml", ["train.epochs=3", "loss.rad=0.5"])
    save_config(cfg, run_dir / "config.yaml")
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from facekd.export.config import ExportConfig
from facekd.runtime_bench.config import BenchConfig
from facekd.training.config import TrainingSection
from facekd.core.io import atomic_write_text
from facekd.core.preprocess import PreprocessSpec
from facekd.training.views import ViewSpec
from facekd.core.errors import FacekdError
from facekd.core.typed import from_data

logger = logging.getLogger(__name__)


class ConfigError(FacekdError, ValueError):
    """A config file or override a user wrote wrongly; the message names the key."""


@dataclass
class DemoConfig:
    """`facekd demo` only: a finished student shown beside the freshly trained one in the report."""

    reference_student: str = ""       # checkpoint (e.g. zoo/<name>/student.pt; relative: to the cwd, else the repo)
    # torch: the parity reference; tflite fp32: the fp32 artifact phone apps load ("what to ship" can name it)
    reference_formats: list[str] = field(default_factory=lambda: ["torch", "tflite"])
    reference_precisions: dict[str, list[str]] = field(default_factory=lambda: {"tflite": ["fp32"]})
    # 2 as well: the bench embeds every face with the row of the most threads
    reference_threads: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class RunConfig(TrainingSection):
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)


# keys of earlier versions that configs saved beside older runs still hold: read, warned about, ignored
RETIRED_KEYS = {
    "export.int8_finetune_steps": "int8-aware training is train.int8_aware_epochs now",
    "export.int8_finetune_faces": "int8-aware training is train.int8_aware_epochs now",
}
# keys of earlier versions that live elsewhere now: read into their new place, with a warning
RENAMED_KEYS = {f"bench.{name}": f"bench.timing.{name}"
                for name in ("warmup_count", "warmup_seconds", "min_runs", "min_seconds", "max_seconds")}


def current_key(dotted: str) -> str:
    """``dotted`` as this version names it (a renamed key's new name, with a warning)."""
    if dotted in RENAMED_KEYS:
        logger.warning("config key %s is %s now: read as that", dotted, RENAMED_KEYS[dotted])
    return RENAMED_KEYS.get(dotted, dotted)


def _current_keys(data: dict, prefix: str) -> dict:
    """``data`` (the mapping at ``prefix``) without retired keys and with renamed ones moved to their new place."""
    current: dict = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if dotted in RETIRED_KEYS:
            logger.warning("config key %s is retired (%s): ignored", dotted, RETIRED_KEYS[dotted])
            continue
        *parents, leaf = current_key(dotted)[len(prefix):].split(".")
        node = current
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = {**value, **node[leaf]} if isinstance(value, dict) and isinstance(node.get(leaf), dict) else value
    return current


def to_dict(cfg) -> dict:
    """Plain nested dict (YAML-safe) of a config dataclass."""
    if isinstance(cfg, (PreprocessSpec, ViewSpec)):
        return cfg.to_dict()
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _free_form_maps(cls, prefix: str = "") -> set[str]:
    """Dotted names of the fields typed ``dict[...]``: their keys are data (formats, precisions), not
    config keys, so a file or override may add keys to them."""
    hints, names = typing.get_type_hints(cls), set()
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if typing.get_origin(hint) is dict:
            names.add(prefix + item.name)
        elif dataclasses.is_dataclass(hint):
            names |= _free_form_maps(hint, f"{prefix}{item.name}.")
    return names


FREE_FORM_MAPS = _free_form_maps(RunConfig)


def _dotted_keys(cls, prefix: str = "") -> list[str]:
    hints, keys = typing.get_type_hints(cls), []
    for item in dataclasses.fields(cls):
        name = prefix + item.name
        keys += _dotted_keys(hints[item.name], name + ".") if dataclasses.is_dataclass(hints[item.name]) else [name]
    return keys


def unknown_key(dotted: str, known_here=()) -> str:
    """"unknown config key X; did you mean Y?": the nearest key of its section (``known_here``), else the
    key of the whole config with the same last part, else the nearest of the whole config."""
    prefix = dotted.rpartition(".")[0]
    siblings = [f"{prefix}.{name}" if prefix else name for name in sorted(known_here)]
    everywhere = _dotted_keys(RunConfig)
    by_leaf = [key for key in everywhere if key.rpartition(".")[2] == dotted.rpartition(".")[2]]
    near = difflib.get_close_matches(dotted, siblings, n=1, cutoff=0.6) or by_leaf[:1] \
        or difflib.get_close_matches(dotted, everywhere, n=1, cutoff=0.6)
    if near:
        return f"unknown config key {dotted}; did you mean {near[0]}?"
    sections = sorted({key.partition(".")[0] for key in everywhere})
    return f"unknown config key {dotted}; sections: {', '.join(sections)}"


def _set_path(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if part not in node:
                raise ConfigError(f"override {dotted!r}: {unknown_key(dotted)}")
            raise ConfigError(f"override {dotted!r}: {part!r} is not a config section")
        node = child
    if parts[-1] not in node and ".".join(parts[:-1]) not in FREE_FORM_MAPS:
        raise ConfigError(f"override {dotted!r}: {unknown_key(dotted, node)}")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Defaults <- YAML files <- `key.sub=value` overrides (values parsed as YAML scalars/lists).

    A file may name another it builds on (``extends: <path>``, relative to the file): that one is applied first.
    """
    tree = to_dict(RunConfig())
    for loaded in _config_chain(Path(path)) if path else []:
        _merge(tree, loaded, "")
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, current_key(key), value)
    return from_data(RunConfig, tree, ConfigError, unknown=unknown_key)


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return loaded


def _config_chain(path: Path) -> list[dict]:
    """The mappings of ``path`` and of the files it extends, the furthest base first."""
    chain, seen = [], []
    while True:
        if path.resolve() in seen:
            raise ConfigError(f"config file {path} extends itself (through {' -> '.join(map(str, seen))})")
        seen.append(path.resolve())
        loaded = _read_config_file(path)
        base = loaded.pop("extends", None)
        chain.insert(0, loaded)
        if base is None:
            return chain
        if not isinstance(base, str) or not base:
            raise ConfigError(f"config file {path}: extends must name one config file, got {base!r}")
        path = path.parent / base


def _merge(base: dict, update: dict, prefix: str) -> None:
    for key, value in _current_keys(update, prefix).items():
        if key not in base:
            if prefix.rstrip(".") in FREE_FORM_MAPS:
                base[key] = value
                continue
            raise ConfigError(unknown_key(f"{prefix}{key}", base))
        if isinstance(base[key], dict) and isinstance(value, dict) and key != "preprocess":
            _merge(base[key], value, f"{prefix}{key}.")
        elif isinstance(base[key], dict) and isinstance(value, dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value


def save_config(cfg, path: str | Path) -> Path:
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_digest(cfg) -> str:
    from facekd.core.io import sha256_text

    return sha256_text(yaml.safe_dump(to_dict(cfg), sort_keys=True))
