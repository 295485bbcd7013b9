from gateway.upload import megabytes


def test_sizes_keep_the_tenth_that_matters():
    assert megabytes(2_600_000) == "2.6 MB"
    assert megabytes(20_000_000) == "20 MB"
    assert megabytes(500_000_000) == "500 MB"
    assert megabytes(99_950_000) == "100 MB"
