"""Minimal valid input dicts for the persistence services (callers override fields)."""

from typing import Any


def session_input(request_id: str = "req-1", **overrides: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "source_technology": "PYTHON_FLASK",
        "target_technology": "JAVA_SPRING",
        "validation_scope": "FULL_SYSTEM",
        "source_input_type": "CODE_FILES",
        "target_input_type": "CODE_FILES",
        **overrides,
    }


def result_input(**overrides: Any) -> dict[str, Any]:
    return {
        "overall_status": "approved",
        "fidelity_score": 0.9,
        "summary": "looks equivalent",
        **overrides,
    }


def discrepancy_input(i: int = 0, **overrides: Any) -> dict[str, Any]:
    return {
        "discrepancy_type": "layout",
        "severity": "WARNING",
        "description": f"difference {i}",
        **overrides,
    }


def behavioral_test_input(name: str = "login", **overrides: Any) -> dict[str, Any]:
    return {
        "scenario_name": name,
        "source_url": "http://source.example/login",
        "target_url": "http://target.example/login",
        "execution_status": "passed",
        **overrides,
    }
