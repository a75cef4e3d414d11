from data.sampling import EpochShuffle


def test_order_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    first = list(a)
    assert sorted(first) == list(range(50)) and len(a) == 50
    assert list(a) == first == list(b)          # no hidden state between iterations
    a.set_epoch(1)
    assert list(a) != first                     # a new permutation per epoch
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(EpochShuffle(50, seed=4)) != first
