"""Schemathesis checks for Portcullis (loaded with SCHEMATHESIS_HOOKS=fuzz_checks).

The fuzzer fronts the demo API through the gateway. A request the fuzzer generated to
break the API document must be refused by the gateway itself: a 4xx that the operation
does not document as its own answer, and that is not the gateway's problem+json, means the
upstream saw non-conforming input.
"""

import schemathesis


def _documented_statuses(case):
    responses = case.operation.definition.raw.get("responses", {})
    return {str(code) for code in responses}


@schemathesis.check
def refused_by_the_gateway(ctx, response, case):
    """A non-conforming request is refused by the gateway, never by the upstream."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return None
    status = response.status_code
    if not 400 <= status < 500 or str(status) in _documented_statuses(case):
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    if not content_type.startswith("application/problem+json"):
        raise AssertionError(
            f"{status} came from the upstream (content-type {content_type!r}): "
            "non-conforming input reached it"
        )
    return True
