"""Helpers shared by the test suites (and the benchmarks), one module per area, imported as
`from tests.support.<area> import ...`; the demo site they run on is `tests.support.demo_site`."""
