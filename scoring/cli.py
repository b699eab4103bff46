"""The `score` and `report` sub-commands of `algoperf` (framework-free)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _add_common(p: argparse.ArgumentParser) -> None:
    from scoring.rules import DEFAULT, RULES

    p.add_argument(
        "logs",
        nargs="+",
        metavar="LOGS_DIR",
        help="folders holding <submission>/study_<k>/<workload>_<framework>/trial_<i>/ logs "
        "(at any depth; <submission>-YYYY-MM-DD-HH-MM-SS folders belong to <submission>)",
    )
    p.add_argument(
        "--rules",
        choices=sorted(RULES),
        default=DEFAULT,
        help=f"rule-set version (default: {DEFAULT})",
    )
    p.add_argument(
        "--ruleset",
        choices=("external", "self"),
        default="external",
        help="tuning ruleset scored: sets the budget (rows of this harness's logs past it do "
        "not count; also drawn in plots) and the studies x trials expected; trials run under "
        "the other ruleset are unofficial",
    )
    p.add_argument(
        "--select",
        choices=("earliest", "fastest"),
        default="earliest",
        help="trial chosen per study: the one reaching the target at the earliest eval index "
        "(the reference scorer; default) or the fastest in time (the documented rule)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="exact integral of rho(tau) instead of the reference's trapezoid on 100 points",
    )
    p.add_argument(
        "--targets",
        metavar="FILE",
        help='JSON overriding the registry: {"workload": {"target": 0.9, "metric": "accuracy", '
        '"higher_is_better": true, "budget": 3600}} (metric etc. default to the registry\'s; '
        "budget: the workload's, before the ruleset's multiplier)",
    )
    p.add_argument(
        "--include-unofficial",
        action="store_true",
        help="also count trials of this harness run with flags the rules fix (--data synthetic, "
        "--max-runtime, --eval-every, --batch-size, --max-steps, another --ruleset/--rules); "
        "by default they are left out and listed with the reason in trials.csv",
    )
    p.add_argument(
        "--workloads",
        nargs="+",
        metavar="NAME",
        help="score only these base workloads (development workloads are scored only if named)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples over studies for the 95%% intervals (default 1000; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")


def _score(args: argparse.Namespace) -> Any:
    from scoring import rules as rules_lib
    from scoring import score as score_lib

    targets = score_lib.targets_from_registry(args.ruleset, args.rules)
    if args.targets:
        multiplier = rules_lib.get(args.rules).budget_multiplier(args.ruleset)
        targets = score_lib.load_targets_file(Path(args.targets), targets, multiplier)
    return score_lib.score(
        [Path(d) for d in args.logs],
        rules=args.rules,
        ruleset=args.ruleset,
        select=args.select,
        exact=args.exact,
        targets=targets,
        workloads=args.workloads,
        bootstrap=args.bootstrap,
        seed=args.seed,
        include_unofficial=args.include_unofficial,
    )


def _warn(result: Any) -> None:
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)


def cmd_score(args: argparse.Namespace) -> int:
    from scoring import score as score_lib

    try:
        result = _score(args)
    except ValueError as e:
        return _usage(args, e)
    _warn(result)
    try:
        paths = score_lib.write_outputs(result, Path(args.out))
    except OSError as e:
        return _usage(args, f"cannot write to --out {args.out} ({e}); give a writable directory.")
    score_lib.print_table(result)
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from scoring import report
    from scoring import score as score_lib

    try:
        result = _score(args)
    except ValueError as e:
        return _usage(args, e)
    _warn(result)
    out = Path(args.out)
    try:
        score_lib.write_outputs(result, out)
        html, md = report.write_report(result, out)
    except OSError as e:
        return _usage(args, f"cannot write to --out {args.out} ({e}); give a writable directory.")
    score_lib.print_table(result)
    print(f"report: {html}\n        {md}")
    return 0


def _usage(args: argparse.Namespace, e: Exception | str) -> int:
    print(f"algoperf {getattr(args, 'command', 'score')}: error: {e}", file=sys.stderr)
    return 2


def register(sub: Any) -> None:
    score = sub.add_parser(
        "score", help="score logs: time-to-target, performance profiles, benchmark score"
    )
    _add_common(score)
    score.set_defaults(func=cmd_score)
    report = sub.add_parser("report", help="HTML + Markdown leaderboard report with plots")
    _add_common(report)
    report.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scoring.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
