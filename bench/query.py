"""The dashboard query every read server answers, and its page sizes."""

import json

SESSIONS_FIRST = 50
DISCREPANCIES_FIRST = 20

DASHBOARD_QUERY = (
    f"query {{ sessions(first: {SESSIONS_FIRST}) {{ totalCount edges {{ node {{ id requestId "
    "status sourceTechnology targetTechnology createdAt latestResult { id fidelityScore "
    "overallStatus } results { id fidelityScore summary } "
    f"discrepancies(first: {DISCREPANCIES_FIRST}) "
    "{ totalCount edges { node { id severity discrepancyType description isResolved "
    "version } } } behavioralTests { id scenarioName executionStatus } } } } }"
)

# The HTTP body POSTed to /graphql by the harness and by wrk.
DASHBOARD_BODY = json.dumps({"query": DASHBOARD_QUERY}).encode()
