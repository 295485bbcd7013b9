from common.chunks import plan_passes
from gateway.schedule import group_batches


def test_batches_keep_one_pass_and_one_length_per_request():
    plans = plan_passes(100_000, 20_000, 0.25, lambda n: n + 10, shifts=2, seed=1, max_shift=500)
    todo = [(p.lead, c) for p in plans for c in p.chunks]
    for size in (1, 2, 3, 8):
        batches = group_batches(todo, size)
        assert [c for b in batches for c in b] == todo  # every chunk once, in order
        for batch in batches:
            assert 1 <= len(batch) <= size
            assert len({lead for lead, _ in batch}) == 1
            assert len({(c.length, c.window_length) for _, c in batch}) == 1
    assert all(len(b) == 1 for b in group_batches(todo, 1))
    assert max(len(b) for b in group_batches(todo, 3)) == 3
