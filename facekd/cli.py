"""`facekd` command line: wires the stages (prepare, cache-teacher, train, eval, export, bench,
report, fetch, demo). No ML logic lives here."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path

from facekd.core.chatter import OWN_PACKAGES, quiet_libraries
from facekd.core.errors import FacekdError

from . import __version__, api
from .config import RunConfig, load_config, save_config
from .outcome import EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_MADE, bench_lines, exit_code, export_lines, export_summary_lines, table
from facekd.core.errors import InputError

EXIT_HELP = ("exit codes: 0 everything requested was made and passed; 1 a bug in facekd (traceback); 2 the command "
             "could not run (one-line error); 3 a requested artifact or benchmark row failed or was rejected (--strict: or is unavailable "
             "here); 130 interrupted")
log = logging.getLogger("facekd")


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML run config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--data", help="aligned faces root, or a folder holding data/lfw (else FACEKD_DATA/FACEKD_HOME)")
    parser.add_argument("--teacher", help="teacher ONNX file (else FACEKD_TEACHER/FACEKD_HOME)")


def run_config(args) -> RunConfig:
    """The command's config (:func:`facekd.api.run_config`: file, --set, data and teacher resolved)."""
    return api.run_config(args.config, args.overrides, getattr(args, "data", None), getattr(args, "teacher", None))


def cmd_prepare(args) -> int:
    from facekd.training.align import prepare_folder

    report = prepare_folder(args.src, args.dst, args.detector, progress=not args.quiet)
    print(json.dumps(report.to_dict(), indent=2))
    left_out = [f"no face in {name}" for name in report.no_face] + [f"cannot read {name}" for name in report.unreadable]
    if left_out:
        shown = "; ".join(left_out[:5]) + (f"; … {len(left_out) - 5} more in the report" if len(left_out) > 5 else "")
        print(f"facekd: {len(left_out)} photos not aligned ({shown}): replace them or leave them out", file=sys.stderr)
        return EXIT_NOT_MADE
    return 0


def cmd_cache_teacher(args) -> None:
    """Under torchrun the ranks build the caches together, each embedding its own share."""
    from facekd.training import distributed

    from .stages import ensure_teacher_cache, ensure_view_cache

    default_recipe(args)
    cfg = run_config(args)
    if args.views is not None:
        cfg.teacher.views = args.views
    main_rank = distributed.rank() == 0
    cache = ensure_teacher_cache(cfg, progress=not args.quiet)
    if main_rank:
        print(f"teacher cache ready: {cache.cache_dir} ({len(cache.embeddings)} images)")
    views = ensure_view_cache(cfg, progress=not args.quiet)
    if views is not None and main_rank:
        print(f"teacher view cache ready: {views.cache_dir} ({views.embeddings.shape[0]} images × {views.views} views)")
    distributed.close_process_group()


def default_recipe(args) -> None:
    """No --config: the demo's recipe, which distils (a teacher-derived student, hardness-aware feature
    consistency), rather than the bare defaults of each config section."""
    if not args.config:
        args.config = str(api.DEMO_CONFIG)
        log.info("no --config: the demo's recipe (%s: the teacher's own network pruned to half its channels, "
                 "distilled with hardness-aware feature consistency, 3 epochs); configs/reference.yaml is the "
                 "larger one", api.DEMO_CONFIG.name)


def cmd_train(args) -> None:
    default_recipe(args)
    result = api.train(args.out, args.config, args.overrides, args.data, args.teacher, resume=args.resume,
                       progress=not args.quiet)
    val = result.metrics.get("val") or {}
    summary = f" val accuracy {val['accuracy']:.4f}" if val else ""
    print(f"student written to {result.student_path}{summary}")


def _eval_embed_fn(args):
    from facekd.training.checkpoint import load_student
    from facekd.training.evaluate import student_embed_fn
    from facekd.training.teacher import load_teacher

    if args.checkpoint:
        model, spec, _ = load_student(args.checkpoint)
        return student_embed_fn(model, spec)
    cfg = load_config(args.config, args.overrides)
    return load_teacher(args.teacher_model, cfg.teacher.preprocess).embed


def cmd_eval(args) -> None:
    from facekd.core.data import read_identity_set
    from facekd.core.verification import evaluate, evaluate_identities
    from facekd.core.pairs import read_lfw_pairs, read_verification_set

    if not args.pairs and not args.sets and not args.identities:
        raise InputError("eval needs --pairs PAIRS --images ROOT, --sets SET… (.bin files or PAIRS.txt=ROOT) "
                         "and/or --identities ROOT (or IDENTITIES.txt=ROOT)")
    if args.pairs and not args.images:
        raise InputError("--pairs needs --images ROOT (the folder the pairs name)")
    sets = ([read_lfw_pairs(args.pairs, args.images)] if args.pairs else []) + [
        read_verification_set(spec, args.images) for spec in args.sets or []]
    folders = [read_identity_set(spec, args.images) for spec in args.identities or []]
    embed = _eval_embed_fn(args)
    progress = not args.quiet
    results = {pairs.name: evaluate(embed, pairs, flip_test=args.flip_test, progress=progress).to_dict()
               for pairs in sets}
    identities = {spec: evaluate_identities(embed, folder, flip_test=args.flip_test, progress=progress,
                                            gallery_size=args.gallery_size, fpir=args.fpir).to_dict()
                  for spec, folder in zip(args.identities or [], folders)}
    single = args.pairs and not args.sets and not identities  # one pairs file: the result itself as JSON, as before
    document = results[sets[0].name] if single else {"flip_test": args.flip_test, "sets": results,
                                                       "identities": identities}
    text = json.dumps(document, indent=2)
    if args.json:
        from facekd.core.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    if single:
        print(text)
        return
    print("\n\n".join(table for table in (suite_table(results, args.flip_test) if results else "",
                                         identities_table(identities)) if table))


def identities_table(results: dict[str, dict]) -> str:
    """One block per set of identities: the all-pairs measures, with what could not be measured."""
    blocks = []
    for name, r in results.items():
        tars = "  ".join(f"TAR@FAR={far} {100 * tar:.2f} %" for far, tar in r["tar_at_far"].items())
        lines = [f"{name}: {r['identities']} identities, {r['faces']} faces, {r['genuine_pairs']:,} genuine / "
                 f"{r['impostor_pairs']:,} impostor pairs",
                 f"  {tars}  EER {100 * r['eer']:.2f} %  rank-1 {100 * r['rank1']:.2f} %"]
        lines += [f"  TAR@FAR={far} not reported: {why}" for far, why in r["unsupported"].items()]
        open_set = r["open_set"]
        if "fnir" in open_set:
            lines.append(f"  open set, gallery of {open_set['gallery_size']} ({open_set['trials']} draws): FNIR "
                         f"{100 * open_set['fnir']:.2f} % at FPIR {100 * open_set['fpir']:g} %")
        else:
            lines.append(f"  open set, gallery of {open_set['gallery_size']}: {open_set['reason']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def suite_table(results: dict[str, dict], flip_test: bool) -> str:
    """One line per set, as arcface_torch logs its verification sets."""
    lines = [f"{'set':<16} {'pairs':>6}  {'accuracy':<16} {'TAR@FAR=1e-3':>12} {'AUC':>7} {'threshold':>9}  flip-test"]
    for name, result in results.items():
        tar = result["tar_at_far"].get("1e-03")
        lines.append(f"{name:<16} {result['num_pairs']:>6}  {100 * result['accuracy']:6.2f} ± "
                     f"{100 * result['accuracy_std']:4.2f} %  {'–' if tar is None else f'{100 * tar:.2f} %':>12} "
                     f"{result['auc']:7.4f} {result['threshold']:9.4f}  {'on' if flip_test else 'off'}")
    return "\n".join(lines)


def cmd_export(args) -> int:
    model = api.load(args.checkpoint)
    if model.checkpoint is None:
        raise api.ModelNotFound(f"{args.checkpoint} is an exported artifact: export needs a student checkpoint (.pt)")
    records = model.export(args.out, args.formats, args.config, args.overrides, args.data, args.teacher,
                           progress=not args.quiet)
    lines = export_lines(records)
    print(table(lines, args.strict))
    return exit_code(lines, args.strict)


def cmd_bench(args) -> int:
    paths = api.bench(args.export_dir, args.out, args.config, args.overrides, args.data, args.teacher,
                      progress=not args.quiet)
    lines = bench_lines(paths)
    print(table(lines, args.strict))
    print("results written to " + ", ".join(str(p) for p in paths))
    return exit_code(lines, args.strict)


def cmd_report(args) -> None:
    from facekd.runtime_bench.report import write_report

    md, html = write_report([Path(p) for p in args.results], Path(args.out))
    print(f"report: {html}\n        {md}")


def cmd_fetch(args) -> None:
    from .fetch import LFW_TGZ_SHA256, fetch

    lfw_sha256 = None if args.lfw_sha256 == "none" else (args.lfw_sha256 or LFW_TGZ_SHA256)
    report = fetch(home=args.cache, mirror=args.mirror, lfw_sha256=lfw_sha256, progress=not args.quiet)
    print(f"data and models ready under {report.home} (fetched {len(report.fetched)}, already there {len(report.skipped)})")


LOCAL_COPY_VARS = ("FACEKD_HOME", "FACEKD_DATA", "FACEKD_TEACHER")


def demo_config(args) -> RunConfig:
    """The demo's run config; on a machine with no data and no teacher named anywhere, ``facekd fetch``
    runs first (into the user cache, resumable), so the demo goes from nothing to its report."""
    import os

    from .fetch import FetchError, fetch
    from .paths import ResourcesNotFound, cache_dir

    try:
        return with_profile_pairs(run_config(args))
    except ResourcesNotFound:
        if args.data or args.teacher or any(os.environ.get(name) for name in LOCAL_COPY_VARS):
            raise  # the user pointed at a copy that is not there: say so, do not download instead
    log.info("no face data or teacher on this machine: fetching LFW, SFace and YuNet into %s "
             "(FACEKD_HOME points the demo at a local copy instead)", cache_dir())
    try:
        fetch(progress=not args.quiet)
    except FetchError as exc:
        raise FetchError(f"the demo found no data or teacher here and could not download them ({exc}); "
                         "set FACEKD_HOME to a local copy (data/lfw/aligned_112, models/sface) or FACEKD_MIRROR "
                         "to a reachable LFW mirror") from None
    return with_profile_pairs(run_config(args))


def with_profile_pairs(cfg: RunConfig) -> RunConfig:
    """The demo benches profile faces too: with no bench.suites given, the CFP frontal-vs-profile pairs found
    beside the faces (``data/cfp/val/cfp_fp*.bin``), on the artifacts of bench.suite_artifacts."""
    from .paths import profile_pairs_beside

    if not cfg.bench.suites:
        found = profile_pairs_beside(cfg.data.aligned_root)
        cfg.bench.suites = [str(found)] if found else []
    return cfg


def cmd_demo(args) -> int:
    from .pipeline import run_demo

    args.config = args.config or str(api.DEMO_CONFIG)
    cfg = demo_config(args)
    summary = run_demo(cfg, Path(args.out), config_path=args.config, progress=not args.quiet)
    lines = export_summary_lines(Path(summary["export_dir"]))
    if summary.get("reference_export_dir"):
        lines += export_summary_lines(Path(summary["reference_export_dir"]), "reference export")
    lines += bench_lines(Path(p) for p in summary["results"])
    print(table(lines, args.strict))
    return exit_code(lines, args.strict)


def cmd_web(args) -> None:
    from .paths import find_detector
    from .web import make_server

    detector = args.detector or find_detector()
    if detector is None:
        raise InputError("no YuNet detector found: pass --detector yunet.onnx, set FACEKD_HOME or run `facekd fetch`")
    server = make_server(args.export_dir, detector, args.artifact, args.host, args.port)
    print(f"facekd web: http://{args.host}:{server.server_address[1]}/  ({args.artifact} of {args.export_dir}; Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def format_help() -> str:
    from facekd.export.formats import available_formats

    lines = ["formats (FORMAT-PRECISION):"]
    for name, precision, available, note in available_formats():
        mark = "available" if available else "not here"
        lines.append(f"  {name + '-' + precision:15s} {mark:9s} {note}")
    return "\n".join(lines)


def _strict_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true",
                        help="exit 3 also when a requested format is unavailable on this host (always: when one failed or was rejected)")


def _global_flags(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--quiet", action="store_true", default=default, help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logging, and the warnings and progress bars of the libraries facekd drives")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facekd", description=__doc__, epilog=EXIT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"facekd {__version__}")
    _global_flags(parser, default=False)
    after = argparse.ArgumentParser(add_help=False)  # the same flags after the subcommand
    _global_flags(after, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[after], **kwargs)

    for add_commands in (_training_commands, _eval_command, _artifact_commands, _other_commands):
        add_commands(command)
    return parser


def _training_commands(command) -> None:
    p = command("prepare", help="align raw photos (root/<identity>/<photo>) to 112×112 crops with YuNet")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--detector", required=True, help="YuNet ONNX file")
    p.set_defaults(func=cmd_prepare)

    p = command("cache-teacher", help="embed the training set with the teacher once (memory-mapped cache; "
                       "under `torchrun --nproc_per_node N -m facekd.cli cache-teacher` each rank embeds its share)")
    _config_args(p)
    p.add_argument("--views", type=int, help="also cache the teacher on V augmented views per image "
                   "(sets teacher.views; training then draws one stored view per image per step)")
    p.set_defaults(func=cmd_cache_teacher)

    p = command("train", help="distil the student from the cached teacher")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory (checkpoints, config.yaml, metrics, tensorboard)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=cmd_train)


def _eval_command(command) -> None:
    p = command("eval", help="verification of a checkpoint or a teacher: 10-fold accuracy on pairs, and on a "
                       "folder of identities all pairs (TAR at FAR 1e-3..1e-5, EER), 1:N rank-1 and open-set FNIR")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="student checkpoint (.pt)")
    who.add_argument("--teacher-model", help="teacher ONNX file (preprocessing from --config teacher.preprocess)")
    p.add_argument("--pairs", help="pairs file in LFW pairs.txt format")
    p.add_argument("--images", help="root of the aligned images the pairs name")
    p.add_argument("--sets", nargs="+", metavar="SET", help="benchmark sets in one table: insightface .bin files "
                   "(lfw.bin cfp_fp.bin agedb_30.bin) and/or PAIRS.txt=IMAGES_ROOT")
    p.add_argument("--identities", nargs="+", metavar="ROOT", help="aligned faces ROOT/<identity>/<image> (or "
                   "IDENTITIES.txt=ROOT): all genuine vs all impostor pairs, rank-1, open-set FNIR")
    p.add_argument("--gallery-size", type=int, default=100, help="open-set gallery size (people enrolled; default 100)")
    p.add_argument("--fpir", type=float, default=0.01, help="open-set false-positive identification rate (default 0.01)")
    p.add_argument("--flip-test", action="store_true", help="average the embeddings of image and mirror image")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--config", help="run config (for the teacher's preprocessing)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_eval)


def _artifact_commands(command) -> None:
    p = command("export", help="convert a student to every format, with manifests and parity gates",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=format_help())
    p.add_argument("checkpoint")
    _config_args(p)
    p.add_argument("--formats", nargs="+", metavar="FORMAT[-PRECISION]", help="default: all available here")
    p.add_argument("--out", required=True)
    _strict_arg(p)
    p.set_defaults(func=cmd_export)

    p = command("bench", help="accuracy and latency of every artifact of an export folder on this host")
    p.add_argument("export_dir")
    _config_args(p)
    p.add_argument("--out", required=True, help="result JSON (with bench.targets beyond this machine: "
                   "one <target>.json per target in its folder)")
    _strict_arg(p)
    p.set_defaults(func=cmd_bench)

    p = command("report", help="merge result JSONs into report.md + report.html")
    p.add_argument("results", nargs="+")
    p.add_argument("--out", required=True, help="report folder")
    p.set_defaults(func=cmd_report)


def _other_commands(command) -> None:
    p = command("fetch", help="download LFW + SFace/YuNet from public sources, verify, align")
    p.add_argument("--mirror", help="base URL of a mirror (else FACEKD_MIRROR, else the public sources)")
    p.add_argument("--cache", help="where to put them (default: the user cache, FACEKD_CACHE)")
    p.add_argument("--lfw-sha256", help="expected sha256 of lfw.tgz, or 'none' to accept a repacked mirror and record its hash")
    p.set_defaults(func=cmd_fetch)

    p = command("web", help="serve the browser client on localhost with an exported ONNX artifact")
    p.add_argument("export_dir")
    p.add_argument("--artifact", default="onnx-fp32", help="artifact folder to serve (an ONNX one; default onnx-fp32)")
    p.add_argument("--detector", help="YuNet ONNX (default: from FACEKD_HOME or the fetch cache)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_web)

    p = command("demo", help="the whole chain: cache teacher, train, export, bench, report "
                       "(default config: facekd/demo.yaml)")
    _config_args(p)
    p.add_argument("--out", default="runs/demo", help="demo folder (re-running reuses finished stages)")
    _strict_arg(p)
    p.set_defaults(func=cmd_demo)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for package in OWN_PACKAGES:  # our progress messages
        logging.getLogger(package).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        quiet_libraries()
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("facekd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FacekdError, OSError) as exc:  # the user's input, files or host: one line that says what to do
        if args.verbose:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"facekd: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except Exception:
        traceback.print_exc()
        print("facekd: this is a bug in facekd, not in what you asked for: please report it with the traceback above",
              file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
