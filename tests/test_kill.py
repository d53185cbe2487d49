"""Kill safety, the test-suite version of tests/tools/kill_harness.py: 5 SIGKILLs of one run."""
from tools.kill_harness import run_harness


def test_five_sigkills_lose_nothing_and_resume_exactly(tmp_path, capsys):
    lines = []
    # fork: runs fork from a server that imported train.py once, so 5 kills fit in well under
    # a minute; the benchmark (20 kills) starts each run as `python train.py`.
    report = run_harness(kills=5, launcher="fork", workdir=str(tmp_path), seed=0, max_delay=0.6,
                         compare=True, log=lines.append)
    with capsys.disabled():
        print(f"\nsurvived {report.survived}/{len(report.kills)} in {report.seconds:.0f} s "
              f"({sum(k.mid_write for k in report.kills)} kills inside a checkpoint write)")
    detail = "\n".join(lines + [f"{k}: {v}" for k, v in report.checks.items()] + report.problems)
    assert len(report.kills) == 5 and report.survived == 5, detail
    assert report.ok, detail
    assert any(k.mid_write for k in report.kills), detail  # at least one kill inside a checkpoint write
    assert report.final_epoch > 5, detail  # the run made progress between kills
