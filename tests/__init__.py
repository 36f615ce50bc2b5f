"""sovra's test suite; a package so that the suites and the benchmarks import `tests.support`."""
