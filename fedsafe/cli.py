"""`fedsafe` command: work outside one Flower run.

  fedsafe check-config [--run-config ...]      resolved config, or the one-line error
  fedsafe gen-attack-data [--run-config ...]   generate/cache the attack data, print path and counts
  fedsafe eval [--model M] [--adapter DIR] [--benchmark B] [--limit N] [--template T] [--out ROWS.jsonl]
               [--run-config ...]
  fedsafe posthoc RUN_DIR [--run-config 'posthoc.level="L3"']   post-hoc again on a finished run
  fedsafe report RUN_DIR                       (re)build report.md and plots
  fedsafe compare A B [--stage after_fl]       two evaluations of the same prompts, prompt by prompt
  fedsafe sweep [--aggregators ...] [--levels ...] [--out DIR]   the paper's table, resumable
  fedsafe run [--log FILE] [APP] [SUPERLINK] [--run-config ...]   flwr run, stopped with its command

A mistake (a bad key or value, a missing or malformed file) is one line, `fedsafe: error: ...`,
with exit code 2; `fedsafe --debug ...` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from fedsafe.config import ConfigError, from_run_config
from fedsafe.launch import Interrupted, SetupError

MISTAKES = (ConfigError, SetupError, OSError, ValueError)  # exit 2, one line (CompareError is a ValueError)


class UsageError(ValueError):
    """A command line fedsafe cannot act on; the message is one line."""


def parse_overrides(specs: list[str]) -> dict:
    """`--run-config` read by Flower's own parser, so fedsafe checks exactly what `flwr run` passes
    on (one TOML file alone, or 'k=v k2=v2' items with TOML values); its errors as one line."""
    import click
    import tomli
    from flwr.common.config import parse_config_args

    specs = list(specs or [])
    try:
        return parse_config_args(specs)
    except OSError as err:
        raise ConfigError(f"--run-config {specs[0]}: cannot read the file ({err.strerror})") from None
    except tomli.TOMLDecodeError as err:
        raise ConfigError(f"--run-config {specs[0]}: not valid TOML ({err})") from None
    except ValueError:  # a file next to key-value pairs
        raise ConfigError(f"--run-config {' '.join(specs)}: a TOML file must be the only --run-config, "
                          "as for flwr run") from None
    except click.ClickException:
        raise ConfigError(f"--run-config {' '.join(specs)!r}: expected KEY=VALUE with a TOML value "
                          "(text in quotes: model.name='org/name'; numbers and true/false bare)") from None


def _settings(args):
    return from_run_config(parse_overrides(args.run_config))


def _run_dir(path: str) -> Path:
    run_dir = Path(path).expanduser()
    if not (run_dir / "results.json").is_file():
        what = "no such folder" if not run_dir.is_dir() else "no results.json: not a fedsafe run directory"
        raise UsageError(f"{run_dir}: {what}")
    return run_dir


def cmd_check_config(args) -> int:
    from fedsafe.preflight import check

    settings = _settings(args)
    check(settings)  # every file and folder the config names, opened
    print(json.dumps(settings.flat, indent=2))
    return 0


def cmd_gen_attack_data(args) -> int:
    from fedsafe.attacks.poison_data import attack_summary
    from fedsafe.logs import console_logging

    from fedsafe.preflight import check

    console_logging()
    settings = _settings(args)
    check(settings)
    summary = attack_summary(settings)
    print(json.dumps({k: summary.get(k) for k in ("path", "generated", "kept", "dropped", "seconds",
                                                   "tokens_per_second") if k in summary}, indent=2))
    return 0


def cmd_report(args) -> int:
    from fedsafe.eval.report import write_report

    print(write_report(_run_dir(args.run_dir)))
    return 0


def cmd_compare(args) -> int:
    from fedsafe.eval.compare import compare, format_table

    results = compare(Path(args.a), Path(args.b), stage=args.stage, seed=args.seed)
    print(format_table(results, args.a, args.b))
    return 0


def cmd_eval(args) -> int:
    from fedsafe.eval.standalone import evaluate_model
    from fedsafe.logs import console_logging

    console_logging()  # progress and the one-line result on stderr; the JSON on stdout
    metrics = evaluate_model(args.model, adapter=args.adapter, benchmark=args.benchmark, limit=args.limit,
                             quantization=args.quantization, judge=args.judge,
                             max_new_tokens=args.max_new_tokens, out=args.out, template=args.template,
                             overrides=parse_overrides(args.run_config))
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_posthoc(args) -> int:
    from fedsafe.posthoc.branch import run_branch
    from fedsafe.logs import console_logging

    console_logging()
    run_branch(Path(args.run_dir), parse_overrides(args.run_config))
    return 0


def cmd_sweep(args) -> int:
    from fedsafe.sweep import run_sweep

    summary = run_sweep(out=Path(args.out), aggregators=args.aggregators.split(","),
                        levels=args.levels.split(","), overrides=parse_overrides(args.run_config),
                        app=Path(args.app), timeout=args.timeout, superlink=args.superlink)
    print(summary)
    return 0


def cmd_run(args) -> int:
    from fedsafe.run_command import run_command

    return run_command(args.flwr_args, log=Path(args.log).expanduser() if args.log else None)


class Parser(argparse.ArgumentParser):
    """argparse's mistakes as one line too (not usage + error)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="fedsafe", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--run-config", "-c", action="append", default=[],
                       help="'k=v k2=v2' (TOML values) or a .toml file, as for flwr run")
        return p

    with_config(sub.add_parser("check-config", help="print the resolved config")).set_defaults(fn=cmd_check_config)
    with_config(sub.add_parser("gen-attack-data", help="generate/cache attack data")).set_defaults(
        fn=cmd_gen_attack_data)
    p = with_config(sub.add_parser("posthoc", help="post-hoc defense on a finished run's global adapter, "
                                   "as a new run directory (only posthoc.* / eval.* keys may change)"))
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_posthoc)
    p = sub.add_parser("report", help="(re)build report.md and plots of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("compare", help="two evaluations of the same prompts: the prompts that changed "
                       "sides and a paired bootstrap interval of the difference")
    p.add_argument("a", help="a run directory or a per-prompt rows file (fedsafe eval --out)")
    p.add_argument("b", help="the same, for the other evaluation")
    p.add_argument("--stage", default="after_fl", help="a run directory's eval stage: initial, after_fl, "
                   "after_posthoc")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.set_defaults(fn=cmd_compare)
    p = with_config(sub.add_parser("eval", help="safety and helpfulness of a model or adapter (--run-config: "
                                   "any eval.* key, e.g. eval.temperature, eval.rm-model; it wins over the flags)"))
    p.add_argument("--model", help="bundled name, Hub id or folder (default: the adapter's run model, "
                   "else smollm2-135m-instruct)")
    p.add_argument("--adapter", help="a PEFT adapter folder (any fedsafe checkpoint)")
    p.add_argument("--benchmark", default="bundled", help="bundled | advbench | harmbench | jbb | CSV/JSONL file")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--quantization", type=int, default=4, choices=(0, 4, 8))
    p.add_argument("--judge", default="rule")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--out", help="write per-prompt rows (JSONL) here")
    p.add_argument("--template", help="model.template: auto | chat | alpaca | a Jinja file (default: the "
                   "adapter's run's, else auto)")
    p.set_defaults(fn=cmd_eval)
    p = with_config(sub.add_parser("sweep", help="no attack; attack x aggregators; attack + post-hoc"))
    p.add_argument("--aggregators", default="fedavg,median,trimmed-mean,krum,multi-krum,foolsgold,residual,dnc,flame")
    p.add_argument("--levels", default="L1,L3")
    p.add_argument("--out", default="sweep")
    p.add_argument("--app", default=".", help="the Flower app folder (this project)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per cell")
    p.add_argument("--superlink", help="SuperLink connection in $FLWR_HOME/config.toml (default: its default)")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("run", help="flwr run --stream, stopped with this command (Ctrl-C, kill), a local "
                       "SuperLink it started stopped after; a quiet console, the full output in --log",
                       usage="fedsafe run [--log FILE] [APP] [SUPERLINK] [flwr run options, e.g. --run-config ...]",
                       allow_abbrev=False)
    p.add_argument("--log", help="write flwr run's whole output here")
    p.set_defaults(fn=cmd_run)

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a != "--debug"]
    try:
        args, rest = parser.parse_known_args(argv)  # `fedsafe run` passes the rest on to flwr run
        if rest and args.command != "run":
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.flwr_args = rest
        return args.fn(args)
    except Interrupted as stop:
        print(f"fedsafe: stopped by {stop}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("fedsafe: stopped by SIGINT", file=sys.stderr)
        return 130
    except MISTAKES as err:
        if debug:
            raise
        print(f"fedsafe: error: {one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a fault of fedsafe's, not of the command line
        if debug:
            raise
        print(f"fedsafe: error: {type(err).__name__}: {one_line(err)} (fedsafe --debug ... shows the traceback)",
              file=sys.stderr)
        return 1


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split("\n")).strip()
    return text or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
