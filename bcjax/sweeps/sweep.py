"""`scripts/sweep.py`: tasks × algorithms × settings × seeds as Ray Tune trials, and their summary.

The trials (`bcjax.sweeps.trials`) are Configs, every one checked before Ray starts; they run on
Tune (`bcjax.sweeps.runner`) and their outcomes become the summary (`bcjax.sweeps.summary`).
"""

from __future__ import annotations

import json
from pathlib import Path

from bcjax.data.files import check_writable_dir
from bcjax.errors import run_script
from bcjax.run.flags import given
from bcjax.sweeps.trials import SweepArgs, auto_seeds_per_trial, parse_seeds, sweep_trials, train_flags


def main(argv: list[str] | None = None) -> int:
    from bcjax.sweeps import runner

    def body() -> int:
        fields, rest = given(SweepArgs, argv, known=True)
        args, fixed = SweepArgs(**fields), train_flags(rest)
        # Every trial is checked before Ray starts; the packing of seeds only changes how they share trials.
        groups = {t.group for t in sweep_trials(args, fixed, 1)}
        from bcjax.run.stats import _rliable
        from bcjax.sweeps.summary import write_summary

        runner.require_ray()
        _rliable()
        out, per_trial, n_seeds = Path(args.out), args.seeds_per_trial, len(parse_seeds(args.seeds))
        check_writable_dir(out, "--out")  # before Ray starts: a read-only or full disk is one line, not a trial's failure
        runner.storage_of(args)
        if per_trial is None and (out / "sweep.json").is_file():  # resuming: keep the packing the sweep started with
            per_trial = max(t["config"]["num_seeds"] for t in json.loads((out / "sweep.json").read_text())["trials"])
        if per_trial is None:
            runner.start_ray(args.address, args.num_cpus)
            per_trial = auto_seeds_per_trial(n_seeds, len(groups), runner.trial_slots(args.cpus_per_trial))
        trials = sweep_trials(args, fixed, per_trial)
        print(f"sweep: {len(trials)} trial(s), {n_seeds} seed(s) per setting, up to {per_trial} per trial")
        outcomes = runner.run_sweep(trials, args)
        write_summary(outcomes, out.resolve(), args.metric)
        print((out / "summary.md").read_text())
        print(f"summary: {out / 'summary.md'} (.csv, .json), plots in {out / 'plots'}")
        if any(o.status == "unfinished" for o in outcomes):
            print(f"{'stopped by SIGTERM' if runner.TERMINATED.is_set() else 'interrupted'}: run the same command "
                  f"again to finish the sweep in {out}")
            return 130
        return 1 if any(o.status == "failed" for o in outcomes) else 0

    code = run_script(body, "interrupted: run the same command again to resume the sweep")
    return 143 if code == 130 and runner.TERMINATED.is_set() else code
