"""The evaluation harness: retrieval, answers, PII detection and ticket triage on judged sets.

Not runtime: nothing in the request path imports this package. `sovra eval …` is its command
line (`sovra.cli.evals`); its extra dependencies (Faker for the generated PII set) are the
`eval` extra.
"""
