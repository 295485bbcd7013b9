import time

from common.chunks import plan_chunks, plan_passes
from gateway.schedule import ProgressReport, fuser_job_ids, group_batches, track_order
from gateway.store import JobRecord, JobStore
from prediction.prefix import ready_frames

PAD = lambda k: k + 100  # noqa: E731


def todo(plans):
    return [(p.lead, c) for p in plans for c in p.chunks]


def shifted_bag():
    """A bag of 2 members with 2 shifts each: 4 passes over 20 000 frames."""
    members = [[1.0, 1.0, 1.0, 1.0], [0.5, 2.0, 1.0, 1.0]]
    return plan_passes(20_000, 1500, 0.25, PAD, shifts=2, seed=1, max_shift=300, members=members)


def test_every_pass_separates_a_region_before_the_next():
    plans = shifted_bag()
    batches = track_order(group_batches(todo(plans), 1))
    starts = [lead_c[0][1].offset - lead_c[0][0] for lead_c in batches]
    assert starts == sorted(starts)
    # the first batches are the first chunk of each of the four passes
    assert {b[0][1].index for b in batches[:4]} == {p.chunks[0].index for p in plans}
    # and the final prefix grows with every region, not only once the last pass is done
    received, seen = set(), []
    for batch in batches:
        received |= {c.index for _, c in batch}
        seen.append(ready_frames(plans, received))
    assert seen == sorted(seen) and seen[-1] == 20_000
    assert seen[len(seen) // 2] > 0.4 * 20_000


def test_track_order_keeps_batches_of_one_pass_and_one_length():
    plans = shifted_bag()
    for size in (1, 3, 4):
        batches = track_order(group_batches(todo(plans), size))
        assert sorted(c.index for b in batches for _, c in b) == sorted(
            c.index for p in plans for c in p.chunks
        )
        for batch in batches:
            assert len(batch) <= size
            assert len({lead for lead, _ in batch}) == 1
            assert len({(c.length, c.window_length) for _, c in batch}) == 1
    one = [plan_chunks(20_000, 1500, 0.25, PAD)]
    assert track_order(group_batches(todo(one), 2)) == group_batches(todo(one), 2)


def test_progress_is_written_at_most_twice_a_second(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    now = time.time()
    store.insert(JobRecord(id="j", status="running", created_at=now, updated_at=now))
    report = ProgressReport(store, "j", total=100, part=(0, 1), ready_frames=0)
    report.ready(44100)
    report.tick(1)  # the first one is written
    for done in range(2, 50):  # these come faster than the interval: held back
        report.ready(44100 * done)
        report.tick(done)
    job = store.get("j")
    assert (job.progress, job.ready_s) == (0.0095, 1.0)
    report.write(50, stage="fusing")  # the last one always is
    job = store.get("j")
    assert (job.progress, job.ready_s, job.stage) == (0.475, 49.0, "fusing")


def test_a_job_s_fuser_jobs_are_its_own_its_members_and_its_chain_s():
    assert fuser_job_ids("j", {"model": "dsp"}) == ["j"]
    chained_ensemble = {"members": [{"model": "a"}, {"model": "b"}], "chain": [{}, {}]}
    assert fuser_job_ids("j", chained_ensemble) == ["j", "j-m0", "j-m1", "j-s", "j-c0", "j-c1"]
