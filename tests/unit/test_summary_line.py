"""The job's last line (stylempi.job.run.Summary.line): what the temporal filter cost is said only
when the filter ran, so that a user can weigh --temporal off."""
from __future__ import annotations

from stylempi.job.run import Summary


def _summary(**kw) -> Summary:
    return Summary(output="out.mp4", frames=48, chunks=6, reused_chunks=0, wall_s=12.0, plan_s=0.2, work_s=11.0,
                   assemble_s=0.3, decode_s=1.0, network_s=9.0, encode_s=2.0, ranks=2, **kw)


def test_the_filter_s_cost_follows_the_timings_and_is_left_out_when_it_did_not_run():
    off = _summary().line()
    assert "temporal filter" not in off and off.endswith("assemble 0.3 s -> out.mp4")
    on = _summary(filter_s=1.26, warmup_frames=16, compile_s=3.0).line()
    assert on.endswith("assemble 0.3 s, compile 3.0 s; temporal filter 1.3 s and 16 warm-up frames "
                       "(summed over ranks) -> out.mp4"), on
    assert "and 1 warm-up frame (summed" in _summary(filter_s=0.5, warmup_frames=1).line()
    assert "and 0 warm-up frames" in _summary(filter_s=0.5).line()  # every chunk started at a cut
