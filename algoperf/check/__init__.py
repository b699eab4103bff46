"""`algoperf check SUBMISSION`: does a submission follow the rules? (issue 16)

Organisers review every AlgoPerf submission by hand for rule violations; this command does the
mechanical part. Three kinds of check, each a row of the report:

- static (the source is read, nothing runs): the API, private workload members, the clock, the
  logs, environment variables, files, monkeypatching, writes to train_state, host syncs, the
  search space and the hyperparameters read (`algoperf.check.static`, `.hyperparameters`);
- import: the module imports and `get_batch_size` covers every workload;
- dynamic (the submission runs, `algoperf.check.dynamic`): a smoke run on mnist1d whose loss must
  fall, a few synthetic-data steps on each base workload of its framework, with update_params
  watched (parameter shapes and dtypes, writes to train_state, host syncs on every step).

Exit code 1 when any check fails, 2 on a usage error, 0 otherwise (warnings included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from algoperf.check.report import CheckResult, exit_code, print_table, to_json

EXIT_USAGE = 2


def run_static(code: Any, ruleset: str, space_path: Path | None) -> list[CheckResult]:
    from algoperf.check import hyperparameters, static

    results = [check(code) for check in static.STATIC_CHECKS]
    results.append(hyperparameters.check_search_space(code, ruleset, space_path))
    results.append(hyperparameters.check_hyperparameters(code, ruleset, space_path))
    return results


def check_submission(
    submission: str,
    ruleset: str = "external",
    framework: str | None = None,
    workloads: list[str] | None = None,
    smoke_steps: int = 200,
    smoke_data: str = "synthetic",
    step_batch_size: int = 8,
    static_only: bool = False,
) -> tuple[Any, list[CheckResult]]:
    """Every check of one submission, in report order. `workloads=None` means each base workload
    of the submission's framework; [] runs no synthetic steps."""
    from algoperf import submission as submission_lib
    from algoperf.check.source import CodeBase

    source = submission_lib.resolve(submission, framework)
    code = CodeBase(source.path)
    results = []
    if code.errors:
        syntax = CheckResult("syntax", "static", "the submission's files parse")
        for path, err in code.errors:
            from algoperf.check.source import Location

            syntax.fail(f"syntax error: {err.msg}", Location(path, err.lineno or 1))
        results.append(syntax)
    results += run_static(code, ruleset, source.search_space)
    if static_only:
        return source, results
    from algoperf.check import dynamic

    results += dynamic.run_dynamic(source, code, ruleset, workloads, smoke_steps, smoke_data, step_batch_size)
    return source, results


def _workload_list(text: str | None) -> list[str] | None:
    if text is None or text == "all":
        return None
    if text == "none":
        return []
    from workloads import registry

    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        registry.get(n)  # raises UnknownWorkloadError with the closest names
    return names


def cmd_check(args: argparse.Namespace) -> int:
    from algoperf import submission as submission_lib
    from workloads import registry

    try:
        workloads = _workload_list(args.workloads)
        source, results = check_submission(
            args.submission, ruleset=args.ruleset, framework=args.framework, workloads=workloads,
            smoke_steps=args.smoke_steps, smoke_data=args.smoke_data,
            step_batch_size=args.step_batch_size, static_only=args.static,
        )
    except (submission_lib.SubmissionError, registry.UnknownWorkloadError) as e:
        print(f"algoperf check: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    header = {"submission": str(source.path), "framework": source.framework, "ruleset": args.ruleset,
              "options": {"workloads": args.workloads or "all", "smoke_steps": args.smoke_steps,
                          "smoke_data": args.smoke_data, "step_batch_size": args.step_batch_size,
                          "static": args.static}}
    if args.json:
        print(to_json(results, header))
    else:
        from algoperf.check.source import display_path

        print_table(results, f"algoperf check: {display_path(source.path)} ({source.framework}, "
                             f"{args.ruleset} tuning)")
    return exit_code(results)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="check a submission against the rules (static, import and dynamic checks)",
        description="Checks a submission against the AlgoPerf rules: reads its source (API, "
                    "forbidden accesses, search space), imports it, and runs it briefly. Exit code "
                    "1 when a check fails.",
    )
    p.add_argument("submission", help="a submission name (submissions/<name>) or a path")
    p.add_argument("--ruleset", choices=("external", "self"), default="external")
    p.add_argument("--framework", choices=("pytorch", "jax"), help="default: from the submission file")
    p.add_argument("--workloads", metavar="LIST",
                   help="comma-separated workloads for the synthetic-data steps; 'all' (default: "
                        "each base workload of the framework) or 'none'")
    p.add_argument("--smoke-steps", type=int, default=200, metavar="N",
                   help="steps of the mnist1d smoke run whose loss must fall (0 skips it; default 200)")
    p.add_argument("--smoke-data", choices=("synthetic", "real"), default="synthetic",
                   help="data of the smoke run (synthetic: nothing to generate or download)")
    p.add_argument("--step-batch-size", type=int, default=8, metavar="N",
                   help="batch size of the synthetic-data steps (0: the submission's own; default 8, "
                        "small enough for a CPU)")
    p.add_argument("--static", action="store_true", help="only read the source: import and run nothing")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_check)
